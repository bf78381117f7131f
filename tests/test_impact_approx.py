"""The impact index's Seismic-style approximate mode: exactness when nothing is pruned, the
guarantee that holds with static pruning, and recall with the defaults."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from retrieval.impact import ApproxParams, ImpactRetriever

pytest.importorskip("numba")

LOSSLESS = ApproxParams(postings_fraction=1.0, min_postings=1, max_postings=10**6, block_size=4,
                        summary_energy=1.0, query_terms=1000, heap_factor=1.0)  # fmt: skip


def _collection(seed: int, n: int, v: int, max_impact: int, density: float):
    rng = np.random.default_rng(seed)
    docs = sp.random(n, v, density=density, random_state=rng,
                     data_rvs=lambda s: rng.integers(1, max_impact + 1, s)).tocsr()  # fmt: skip
    ids = [f"d{rng.integers(10**6)}-{i}" for i in range(n)]  # id order differs from row order
    queries = sp.random(40, v, density=0.08, random_state=rng,
                        data_rvs=lambda s: rng.integers(1, 6, s)).tocsr()  # fmt: skip
    return docs, ids, [f"t{i}" for i in range(v)], queries


def _kept_docs(index: ImpactRetriever, term: int) -> set[int]:
    b = index.blocks
    lo, hi = b["block_ptr"][b["term_blocks"][term]], b["block_ptr"][b["term_blocks"][term + 1]]
    return set(b["block_docs"][lo:hi].tolist())


@pytest.mark.parametrize("heap_factor", [1.0, 0.5])
def test_nothing_pruned_equals_exact_with_ties(heap_factor):
    # small impacts: many tied scores; summaries with all their mass bound every block, so
    # a block is skipped only when none of its documents can reach the k-th score
    docs, ids, vocab, queries = _collection(0, 300, 60, 4, 0.15)
    index = ImpactRetriever.from_vectors(ids, docs, vocab, 1.0, approx=LOSSLESS)
    for k in (1, 10, 50):
        exact = index.search_vectors(queries, k)
        search = ApproxParams(query_terms=1000, heap_factor=heap_factor)
        assert index.search_vectors(queries, k, mode="approx", approx=search) == exact


def test_static_pruning_guarantee():
    # With bounding summaries and heap_factor 1, a document left out either occurs in no kept
    # list of the query's terms, or scores at most the k-th score returned.
    docs, ids, vocab, queries = _collection(1, 800, 80, 50, 0.1)
    params = ApproxParams(postings_fraction=0.3, min_postings=8, block_size=8, summary_energy=1.0,
                          query_terms=1000, heap_factor=1.0)  # fmt: skip
    index = ImpactRetriever.from_vectors(ids, docs, vocab, 1.0, approx=params)
    hits = index.search_arrays(queries, 10, mode="approx")
    scores = (queries @ docs.T).toarray()
    for r in range(queries.shape[0]):
        got = hits.docs[r, : hits.counts[r]]
        np.testing.assert_array_equal(hits.scores[r, : hits.counts[r]], scores[r, got])  # exact scores
        reachable = set().union(*(_kept_docs(index, t) for t in queries[r].indices))
        left_out = np.array(sorted(reachable - set(got.tolist())), dtype=np.int64)
        kth = hits.scores[r, hits.counts[r] - 1]
        assert hits.counts[r] == min(10, int((scores[r, sorted(reachable)] > 0).sum()))
        assert (scores[r, left_out] <= kth).all()


def test_recall_and_order_with_pruning():
    # realistic skew: Zipfian term frequencies, log-normal impacts (like BM25 or SPLADE weights)
    rng = np.random.default_rng(0)
    n, v = 3000, 400
    present = rng.random((n, v)) < 0.3 / (np.arange(v) + 1) ** 0.7
    docs = sp.csr_matrix(np.minimum(200, np.ceil(rng.lognormal(3, 0.8, (n, v)))).astype(np.int64) * present)
    queries = sp.csr_matrix((rng.random((40, v)) < 0.02) * rng.integers(1, 6, (40, v)))
    # the default blocking and search, with lists cut to 30% (these are too short for the default
    # max_postings to cut anything)
    index = ImpactRetriever.from_vectors([f"d{i}" for i in range(n)], docs, [f"t{i}" for i in range(v)], 1.0,
                                         approx=ApproxParams(postings_fraction=0.3, min_postings=16))  # fmt: skip
    exact = index.search_vectors(queries, 10)
    approx = index.search_vectors(queries, 10, mode="approx")
    recall = np.mean([len(set(a.doc_ids) & set(e.doc_ids)) / len(e.doc_ids)
                      for a, e in zip(approx, exact, strict=True) if e.doc_ids])  # fmt: skip
    assert len(index.blocks["block_docs"]) < 0.5 * len(index.full.docs)  # static pruning dropped postings
    assert recall >= 0.95
    for a in approx:  # score desc, ties by doc id, like Ranking.from_scores
        hits = list(zip(a.scores, a.doc_ids, strict=True))
        assert hits == sorted(hits, key=lambda h: (-h[0], h[1]))

"""The impact index's Seismic-style approximate mode: exactness when nothing is pruned, the
guarantee that holds with static pruning, and recall with the defaults."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cascade.retrieval.sparse.impact import ApproxParams, ImpactRetriever

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


def _summary_rows(index: ImpactRetriever):
    """Each block's summary row (terms, 8-bit values), computed by block as format 2 stored them."""
    from cascade.retrieval.sparse.seismic_kernel import block_summaries

    fwd, b = index.forward(), index.blocks
    energy = index.params["approx"]["summary_energy"]
    return block_summaries(b["block_ptr"], b["block_docs"], fwd.indptr, fwd.docs, fwd.impacts, len(index.vocab),
                           energy)  # fmt: skip


def test_summaries_by_term_hold_every_block_row():
    docs, ids, vocab, queries = _collection(2, 600, 70, 40, 0.12)
    index = ImpactRetriever.from_vectors(ids, docs, vocab, 1.0, approx=ApproxParams(min_postings=8, block_size=6,
                                                                                   summary_energy=0.8))  # fmt: skip
    ptr, terms, values, _ = _summary_rows(index)
    b = index.blocks
    assert b["summary_col_terms"].dtype == np.uint16 and b["summary_col_blocks"].dtype == np.uint16
    for t in range(len(vocab)):
        b0, b1 = b["term_blocks"][t], b["term_blocks"][t + 1]
        by_rows = np.zeros((b1 - b0, len(vocab)), dtype=np.int64)
        for blk in range(b0, b1):
            by_rows[blk - b0, terms[ptr[blk] : ptr[blk + 1]]] = values[ptr[blk] : ptr[blk + 1]]
        by_cols = np.zeros_like(by_rows)
        cols = range(b["summary_list_cols"][t], b["summary_list_cols"][t + 1])
        col_terms = b["summary_col_terms"][cols.start : cols.stop]
        assert (np.diff(col_terms.astype(np.int64)) > 0).all()  # ascending, each term once
        for g in cols:
            lo, hi = b["summary_col_ptr"][g], b["summary_col_ptr"][g + 1]
            by_cols[b["summary_col_blocks"][lo:hi], b["summary_col_terms"][g]] = b["summary_col_values"][lo:hi]
        np.testing.assert_array_equal(by_cols, by_rows)


def test_format_2_summary_rows_are_regrouped_on_load():
    docs, ids, vocab, queries = _collection(3, 500, 60, 30, 0.12)
    index = ImpactRetriever.from_vectors(ids, docs, vocab, 1.0, approx=ApproxParams(min_postings=8, block_size=6))
    ptr, terms, values, _ = _summary_rows(index)
    old = {name: a for name, a in index._arrays().items() if not name.startswith("summary_col")
           and name != "summary_list_cols"}  # fmt: skip
    old.update(summary_ptr=ptr, summary_terms=terms, summary_values=values)
    loaded = ImpactRetriever(old, vocab, index.params)
    assert loaded.search_vectors(queries, 10, mode="approx") == index.search_vectors(queries, 10, mode="approx")


def test_vocabulary_beyond_16_bits_keeps_int32_ids_and_exactness():
    rng = np.random.default_rng(4)
    n, v = 200, 70_000
    cols = rng.choice(v, size=(n, 12))
    docs = sp.csr_matrix((rng.integers(1, 30, n * 12), cols.ravel(), np.arange(0, n * 12 + 1, 12)), shape=(n, v))
    docs.sum_duplicates()
    queries = docs[rng.choice(n, 20)].copy()
    queries.data = rng.integers(1, 4, queries.nnz).astype(np.float64)
    index = ImpactRetriever.from_vectors([f"d{i}" for i in range(n)], docs, [f"t{i}" for i in range(v)], 1.0,
                                         approx=LOSSLESS)  # fmt: skip
    assert index.blocks["summary_col_terms"].dtype == np.int32 and index.forward().docs.dtype == np.int32
    assert index.search_vectors(queries, 10, mode="approx", approx=LOSSLESS) == index.search_vectors(queries, 10)

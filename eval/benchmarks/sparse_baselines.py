"""Reference searchers for ``cascade bench sparse``: scipy brute force, Lucene, Seismic.

Each one takes the same integer impact vectors as the native index (documents as a docs x
terms CSR matrix, queries as a queries x terms CSR matrix over the same vocabulary).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cascade.retrieval.errors import require
from cascade.retrieval.topk import id_ranks, top_k_ranking
from cascade.retrieval.types import Ranking


def recall(approx: Sequence[Ranking], exact: Sequence[Ranking]) -> float:
    """Mean share of each exact top-k found by ``approx`` (queries with hits only)."""
    per = [len(set(a.doc_ids) & set(e.doc_ids)) / len(e.doc_ids) for a, e in zip(approx, exact, strict=True)
           if e.doc_ids]  # fmt: skip
    return round(float(np.mean(per)), 4) if per else 1.0


def scipy_top_k(queries: sp.csr_matrix, term_doc: sp.csr_matrix, doc_ids: Sequence[str], ranks: np.ndarray,
                qids: Sequence[str], k: int, batch: int = 256) -> list[Ranking]:  # fmt: skip
    """Brute force: one sparse product per batch of queries, then the exact top k of each row
    (argpartition, ties by doc id), the way the BM25 retriever ranks."""
    out = []
    for start in range(0, queries.shape[0], batch):
        scores = (queries[start : start + batch] @ term_doc).tocsr()
        for i in range(scores.shape[0]):
            lo, hi = scores.indptr[i], scores.indptr[i + 1]
            out.append(top_k_ranking(qids[start + i], scores.indices[lo:hi], scores.data[lo:hi], doc_ids, ranks, k))
    return out


def scipy_searcher(doc_matrix: sp.csr_matrix, doc_ids: Sequence[str]) -> Callable[..., list[Ranking]]:
    """``f(queries, qids, k, batch)`` over a float32 (terms x docs) copy made once."""
    term_doc, ids, ranks = doc_matrix.T.tocsr().astype(np.float32), list(doc_ids), id_ranks(doc_ids)
    return lambda queries, qids, k, batch=256: scipy_top_k(queries, term_doc, ids, ranks, qids, k, batch)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr: pyseismic's Rust code and Anserini's JVM print their
    build logs on stdout, where ``--json`` promises a single JSON object."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _rows(m: sp.csr_matrix, vocab: np.ndarray):
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        yield vocab[m.indices[lo:hi]], m.data[lo:hi].astype(np.float32)


def seismic(doc_ids: Sequence[str], doc_matrix: sp.csr_matrix, vocab: Sequence[str], queries: sp.csr_matrix,
            qids: Sequence[str], k: int, exact: Sequence[Ranking], settings: Sequence[dict], race) -> dict:  # fmt: skip
    """pyseismic-lsr (Rust Seismic) on the same vectors, 1 thread: q/s and recall@k per setting.

    ``settings``: dicts with build keys (n_postings, centroid_fraction, summary_energy) and
    search keys (query_cut, heap_factor).
    """
    seismic_mod = require("seismic", "bench")
    words = np.asarray(vocab, dtype=seismic_mod.get_seismic_string())
    dataset = seismic_mod.SeismicDataset()
    for did, (terms, values) in zip(doc_ids, _rows(doc_matrix, words), strict=True):
        dataset.add_document(did, terms, values)
    q_terms, q_values = zip(*_rows(queries, words), strict=True)
    q_ids = np.asarray(qids, dtype=seismic_mod.get_seismic_string())
    out = []
    for s in settings:
        build = {key: s[key] for key in ("n_postings", "centroid_fraction", "summary_energy") if key in s}
        t = time.perf_counter()
        with _stdout_to_stderr():
            index = seismic_mod.SeismicIndex.build_from_dataset(dataset, num_threads=1, **build)
        build_s = time.perf_counter() - t
        (secs, res), = race({"seismic": lambda index=index, s=s: index.batch_search(
            q_ids, list(q_terms), list(q_values), k, s["query_cut"], s["heap_factor"], num_threads=1)}).values()
        by_id = {hits[0][0]: hits for hits in res if hits}  # results do not come back in query order
        rankings = [Ranking.from_scores(qid, [h[2] for h in by_id.get(qid, [])], [h[1] for h in by_id.get(qid, [])], k)
                    for qid in qids]  # fmt: skip
        out.append({"settings": s, "index_s": round(build_s, 2), "queries_per_s": round(len(qids) / secs, 1),
                    "recall_vs_exact": recall(rankings, exact)})  # fmt: skip
    return {"name": "pyseismic-lsr 0.5.4 (Seismic, Rust), batch_search, 1 thread", "runs": out}


def lucene(doc_ids, doc_matrix, vocab, queries, qids, k, exact, race) -> dict:
    """Lucene impact search through Pyserini (JVM start and indexing not timed)."""
    from cascade.retrieval.sparse.lucene_impact import (
        LuceneImpactSearcher,
        build_lucene_impact_index,
        write_json_vector_collection,
    )

    with tempfile.TemporaryDirectory() as tmp:
        write_json_vector_collection(Path(tmp) / "coll" / "docs.jsonl", doc_ids, doc_matrix, vocab)
        t = time.perf_counter()
        with _stdout_to_stderr():  # the JVM logs the indexing on stdout
            build_lucene_impact_index(Path(tmp) / "coll", Path(tmp) / "index")
        index_s = time.perf_counter() - t
        searcher = LuceneImpactSearcher(Path(tmp) / "index")
        dicts = [{vocab[c]: int(v) for c, v in zip(*row, strict=True)}
                 for row in _rows(queries, np.arange(len(vocab)))]  # fmt: skip
        jqueries = [searcher.jquery(d) for d in dicts]
        (secs, hits), = race({"lucene": lambda: [searcher.search_prepared(q, k) for q in jqueries]}, 3).values()
        rankings = [Ranking.from_scores(q, [h.docid for h in hs], np.round([h.score for h in hs]), k)
                    for q, hs in zip(qids, hits, strict=True)]  # fmt: skip
    return {"name": "Lucene impact search (Pyserini/Anserini)", "index_s": round(index_s, 2),
            "queries_per_s": round(len(qids) / secs, 1), "recall_vs_exact": recall(rankings, exact),
            "same_top_k": sum(a.doc_ids == b.doc_ids for a, b in zip(rankings, exact, strict=True))}  # fmt: skip

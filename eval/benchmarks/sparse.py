"""``cascade bench sparse``: the native impact index against scipy brute force and Lucene.

Impacts are BM25 term weights x100 rounded to integers (from the native BM25 index, Anserini
parameters), queries are BM25 bag-of-words term counts. These are realistic impact
distributions (Zipfian postings, integer weights up to a few hundred) that need no model;
SPLADE weights would need a checkpoint from the hub, and MiniLM has no MLM head to expand
documents with. All searches are single-threaded over the split's queries, top ``k``:

- ours, exact: MaxScore (compiled with numba when installed, else the vectorized numpy
  kernel: ``engine``); its rankings must equal the brute force ones.
- ours, approx: Seismic-style static pruning + query term cut; recall@k against exact.
- baseline: scipy sparse product (queries x terms) @ (terms x docs) in batches, then an
  exact top-k per query (the way the BM25 retriever ranks).
- Lucene impact search through Pyserini when installed (JVM start and indexing not timed).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from eval.bench import best_of
from eval.datasets import load_dataset
from retrieval.bm25 import BM25Retriever
from retrieval.errors import MissingDependency
from retrieval.impact import ApproxParams, ImpactRetriever
from retrieval.topk import id_ranks, top_k_ranking
from retrieval.types import Ranking

log = logging.getLogger(__name__)


def bm25_impacts(bm25: BM25Retriever, scale: float = 100.0) -> sp.csr_matrix:
    """BM25 term weights as (docs x terms) integer impacts."""
    m = bm25._matrix.T.tocsr()
    m.data = np.rint(m.data.astype(np.float64) * scale)
    m.eliminate_zeros()
    m.data = m.data.astype(np.uint16)
    return m


def scipy_top_k(queries: sp.csr_matrix, term_doc: sp.csr_matrix, doc_ids: np.ndarray, qids: list[str], k: int,
                batch: int = 256) -> list[Ranking]:  # fmt: skip
    """Brute force: one sparse product per batch of queries, then the exact top k of each row."""
    out, id_list, ranks = [], list(doc_ids), id_ranks(doc_ids)
    for start in range(0, queries.shape[0], batch):
        scores = (queries[start : start + batch] @ term_doc).tocsr()
        for i in range(scores.shape[0]):
            lo, hi = scores.indptr[i], scores.indptr[i + 1]
            out.append(
                top_k_ranking(qids[start + i], scores.indices[lo:hi], scores.data[lo:hi], id_list, ranks, k)
            )
    return out


def _recall(approx: list[Ranking], exact: list[Ranking]) -> float:
    per = [
        len(set(a.doc_ids) & set(e.doc_ids)) / len(e.doc_ids)
        for a, e in zip(approx, exact, strict=True)
        if e.doc_ids
    ]
    return round(float(np.mean(per)), 4) if per else 1.0


def _lucene(doc_ids, doc_matrix, vocab, queries, qids, k, exact) -> dict:
    from retrieval.lucene_impact import (
        LuceneImpactSearcher,
        build_lucene_impact_index,
        write_json_vector_collection,
    )

    with tempfile.TemporaryDirectory() as tmp:
        write_json_vector_collection(Path(tmp) / "coll" / "docs.jsonl", doc_ids, doc_matrix, vocab)
        t = time.perf_counter()
        build_lucene_impact_index(Path(tmp) / "coll", Path(tmp) / "index")
        index_s = time.perf_counter() - t
        searcher = LuceneImpactSearcher(Path(tmp) / "index")
        dicts = [
            {vocab[c]: int(v) for c, v in zip(queries.indices[queries.indptr[i] : queries.indptr[i + 1]],
                                              queries.data[queries.indptr[i] : queries.indptr[i + 1]], strict=True)}
            for i in range(queries.shape[0])
        ]  # fmt: skip
        jqueries = [searcher.jquery(d) for d in dicts]
        secs, hits = best_of(lambda: [searcher.search_prepared(q, k) for q in jqueries])
        rankings = [Ranking.from_scores(q, [h.docid for h in hs], np.round([h.score for h in hs]), k)
                    for q, hs in zip(qids, hits, strict=True)]  # fmt: skip
    return {"name": "Lucene impact search (Pyserini/Anserini)", "index_s": round(index_s, 2),
            "queries_per_s": round(len(qids) / secs, 1), "recall_vs_exact": _recall(rankings, exact),
            "same_top_k": sum(a.doc_ids == b.doc_ids for a, b in zip(rankings, exact, strict=True))}  # fmt: skip


def run(dataset_dir: Path, device: str | None = None, k: int = 10, split: str = "test", scale: float = 100.0,
        lucene: bool = True, approx: dict | None = None, engine: str = "auto", **_) -> dict:  # fmt: skip
    """Time exact and approximate native impact search against scipy (and Lucene)."""
    from threadpoolctl import threadpool_limits

    ds = load_dataset(dataset_dir, split)
    docs = list(ds.corpus())
    with threadpool_limits(1):
        bm25 = BM25Retriever.build(docs, show_progress=False)
        doc_matrix = bm25_impacts(bm25, scale)
        queries = bm25.query_matrix(ds.queries)
        qids = [q.id for q in ds.queries]
        params = ApproxParams(**(approx or {}))
        t = time.perf_counter()
        index = ImpactRetriever.from_vectors(bm25.doc_ids.tolist(), doc_matrix, bm25.vocab, scale, params)
        index_s = time.perf_counter() - t
        term_doc = doc_matrix.T.tocsr().astype(np.float32)
        base_s, base = best_of(lambda: scipy_top_k(queries, term_doc, bm25.doc_ids, qids, k))
        if engine == "auto":
            engine = "numba" if importlib.util.find_spec("numba") else "numpy"
        index.search_vectors(queries[:2], k, qids[:2], engine=engine)  # compile / warm up
        exact_s, exact = best_of(lambda: index.search_vectors(queries, k, qids, engine=engine))
        approx_s, approx_r = best_of(
            lambda: index.search_vectors(queries, k, qids, mode="approx", engine=engine)
        )
        lucene_out = None
        if lucene:
            try:
                lucene_out = _lucene(bm25.doc_ids.tolist(), doc_matrix, bm25.vocab, queries, qids, k, exact)
            except MissingDependency as e:
                lucene_out = {"name": "Lucene impact search", "skipped": str(e)}
    n = len(qids)
    exact_qps, base_qps = n / exact_s, n / base_s
    out = {
        "benchmark": "sparse", "dataset": str(dataset_dir), "num_docs": len(docs), "num_queries": n, "k": k,
        "threads": 1, "impacts": f"BM25 (k1=0.9, b=0.4) x{scale:g}, integer", "postings": int(doc_matrix.nnz),
        "ours": {"name": f"cascade impact index, exact MaxScore ({engine} engine)", "index_s": round(index_s, 2),
                 "queries_per_s": round(exact_qps, 1),
                 "identical_to_brute_force": sum(a == b for a, b in zip(exact, base, strict=True)),
                 "approx": {"params": params.__dict__, "queries_per_s": round(n / approx_s, 1),
                            "recall_vs_exact": _recall(approx_r, exact),
                            "speedup_vs_exact": round(exact_s / approx_s, 3)}},
        "baseline": {"name": "scipy sparse product + exact top-k", "queries_per_s": round(base_qps, 1)},
        "ratio": round(exact_qps / base_qps, 3),
    }  # fmt: skip
    if lucene_out is not None:
        out["lucene"] = lucene_out
        if "queries_per_s" in lucene_out:
            out["ratio_vs_lucene"] = round(exact_qps / lucene_out["queries_per_s"], 3)
    return out

"""``cascade bench sparse``: the native impact index against scipy brute force, Lucene and Seismic.

Impacts are BM25 term weights x100 rounded to integers (from the native BM25 index, Anserini
parameters), queries are BM25 bag-of-words term counts. These are realistic impact
distributions (Zipfian postings, integer weights up to a few hundred) that need no model;
SPLADE weights would need a checkpoint from the hub, and MiniLM has no MLM head to expand
documents with. All searches are single-threaded over the split's queries, top ``k``, timed
by :func:`eval.bench.race` (contenders take turns, fastest round kept, each timed warm: one
untimed call right before, so no contender pays for the previous one evicting its index from
the CPU caches):

- ours, exact: :meth:`ImpactRetriever.search_vectors` over the whole query batch, returning
  one :class:`Ranking` per query (what a user calls); also ``search_arrays`` (doc indexes and
  scores as arrays) and one call per query. Its rankings must equal the brute force ones.
- ours, approx: the same call with ``mode="approx"`` (Seismic-style); recall@k against exact,
  plus a trade-off curve over approximate parameters (``curve=true``).
- baseline: scipy sparse product (queries x terms) @ (terms x docs) in batches of 256, then an
  exact top-k per query (argpartition, ties by doc id), returning rankings too.
- Lucene impact search through Pyserini when installed (``lucene=false`` skips it).
- Seismic (pyseismic-lsr) on the same vectors when installed (``seismic=false`` skips it).

``scale=N`` replicates the corpus N times with impacts perturbed by up to 30% (ids
``"<id>#<copy>"``), a larger synthetic collection where pruning has more to skip.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cascade.eval.bench import race
from cascade.eval.datasets import load_dataset
from cascade.retrieval.errors import MissingDependency
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.sparse.impact import ApproxParams, ImpactRetriever

from . import sparse_baselines as base

log = logging.getLogger(__name__)

#: every race here times each contender warm (see :func:`eval.bench.race`)
warm_race = partial(race, warm=True)

#: Approximate settings of the trade-off curve: (build fields, search fields).
CURVE = [
    ({"summary_energy": e}, {"query_terms": q, "heap_factor": h})
    for e in (0.8, 0.9, 1.0)
    for q, h in ((5, 0.9), (8, 0.8))
]
#: pyseismic settings: its MS MARCO defaults, and a high-recall one (whole summaries, a longer
#: query cut) to bracket our approximate mode from above.
SEISMIC = [
    {"n_postings": 3500, "centroid_fraction": 0.1, "summary_energy": 0.4, "query_cut": 10, "heap_factor": 0.7},
    {"n_postings": 1000, "centroid_fraction": 0.1, "summary_energy": 1.0, "query_cut": 16, "heap_factor": 0.9},
]


def bm25_impacts(bm25: BM25Retriever, scale: float = 100.0) -> sp.csr_matrix:
    """BM25 term weights as (docs x terms) integer impacts."""
    m = bm25._matrix.T.tocsr()
    m.data = np.rint(m.data.astype(np.float64) * scale)
    m.eliminate_zeros()
    m.data = m.data.astype(np.uint16)
    return m


def replicate(doc_matrix: sp.csr_matrix, doc_ids: list[str], copies: int, seed: int = 0):
    """The corpus ``copies`` times, each copy's impacts scaled by U(0.7, 1.3) per posting (>= 1)."""
    rng = np.random.default_rng(seed)
    mats = [doc_matrix] + [
        sp.csr_matrix((np.maximum(1, np.rint(doc_matrix.data * rng.uniform(0.7, 1.3, doc_matrix.nnz))).astype(
            doc_matrix.dtype), doc_matrix.indices, doc_matrix.indptr), shape=doc_matrix.shape)
        for _ in range(copies - 1)
    ]  # fmt: skip
    return sp.vstack(mats).tocsr(), [f"{i}#{c}" if c else i for c in range(copies) for i in doc_ids]


def _qps(n: int, secs: float) -> float:
    return round(n / secs, 1)


def _curve(doc_ids, doc_matrix, vocab, queries, qids, k, exact, exact_fn, rounds) -> list[dict]:
    """Recall and speed of approximate settings, each raced against exact search."""
    out = []
    for build, search in CURVE:
        t = time.perf_counter()
        index = ImpactRetriever.from_vectors(doc_ids, doc_matrix, vocab, 100.0, ApproxParams(**build))
        index_s = time.perf_counter() - t
        params = ApproxParams(**build, **search)
        timed = warm_race({"exact": exact_fn, "approx": lambda i=index, p=params: i.search_vectors(
            queries, k, qids, mode="approx", approx=p)}, rounds)  # fmt: skip
        out.append({"params": asdict(params), "index_s": round(index_s, 2),
                    "queries_per_s": _qps(len(qids), timed["approx"][0]),
                    "recall_vs_exact": base.recall(timed["approx"][1], exact),
                    "speedup_vs_exact": round(timed["exact"][0] / timed["approx"][0], 3)})  # fmt: skip
    return out


def run(dataset_dir: Path, device: str | None = None, k: int = 10, split: str = "test", impact_scale: float = 100.0,
        scale: int = 1, lucene: bool = True, seismic: bool = True, curve: bool = True, approx: dict | None = None,
        engine: str = "auto", rounds: int = 5, **_) -> dict:  # fmt: skip
    """Time exact and approximate native impact search against scipy (and Lucene, Seismic)."""
    from threadpoolctl import threadpool_limits

    ds = load_dataset(dataset_dir, split)
    docs = list(ds.corpus())
    with threadpool_limits(1):
        bm25 = BM25Retriever.build(docs, show_progress=False)
        doc_matrix, doc_ids = bm25_impacts(bm25, impact_scale), bm25.doc_ids.tolist()
        if scale > 1:
            doc_matrix, doc_ids = replicate(doc_matrix, doc_ids, scale)
        queries, qids, vocab = bm25.query_matrix(ds.queries), [q.id for q in ds.queries], bm25.vocab
        params = ApproxParams(**(approx or {}))
        t = time.perf_counter()
        index = ImpactRetriever.from_vectors(doc_ids, doc_matrix, vocab, impact_scale, params)
        index_s = time.perf_counter() - t
        brute = base.scipy_searcher(doc_matrix, doc_ids)
        if engine == "auto":
            engine = "numba" if importlib.util.find_spec("numba") else "numpy"
        index.search_vectors(queries[:2], k, qids[:2], engine=engine)  # compile / warm up
        if engine == "numba":
            index.search_vectors(queries[:2], k, qids[:2], mode="approx")

        def exact_fn():
            return index.search_vectors(queries, k, qids, engine=engine)

        one = [queries[i] for i in range(queries.shape[0])]
        timed = warm_race({
            "scipy": lambda: brute(queries, qids, k), "exact": exact_fn,
            "exact_arrays": lambda: index.search_arrays(queries, k, engine=engine),
            "scipy_per_query": lambda: [brute(q, [i], k) for q, i in zip(one, qids, strict=True)],
            "exact_per_query": lambda: [index.search_vectors(q, k, [i], engine=engine)
                                        for q, i in zip(one, qids, strict=True)],
            **({"approx": lambda: index.search_vectors(queries, k, qids, mode="approx")} if engine == "numba" else {}),
        }, rounds)  # fmt: skip
        exact, brute_rankings = timed["exact"][1], timed["scipy"][1]
        n = len(qids)
        qps = {name: _qps(n, secs) for name, (secs, _) in timed.items()}
        ours = {"name": f"cascade impact index, exact ({engine} engine)", "index_s": round(index_s, 2),
                "timed": "search_vectors(batch of all queries) -> list[Ranking]",
                "queries_per_s": qps["exact"], "arrays_queries_per_s": qps["exact_arrays"],
                "per_query_call_queries_per_s": qps["exact_per_query"],
                "identical_to_brute_force": sum(a == b for a, b in zip(exact, brute_rankings, strict=True))}  # fmt: skip
        if "approx" in timed:
            ours["approx"] = {"params": asdict(params), "queries_per_s": qps["approx"],
                              "recall_vs_exact": base.recall(timed["approx"][1], exact),
                              "speedup_vs_exact": round(timed["exact"][0] / timed["approx"][0], 3)}  # fmt: skip
            if curve:
                ours["approx_curve"] = _curve(doc_ids, doc_matrix, vocab, queries, qids, k, exact, exact_fn,
                                              max(2, rounds // 2))  # fmt: skip
        out = {
            "benchmark": "sparse", "dataset": str(dataset_dir), "num_docs": len(doc_ids), "scale": scale,
            "num_queries": n, "k": k, "threads": 1,
            "timing": f"fastest of {rounds} rounds, contenders in turn, each called once untimed right before",
            "impacts": f"BM25 (k1=0.9, b=0.4) x{impact_scale:g}, integer",
            "postings": int(doc_matrix.nnz), "ours": ours,
            "baseline": {"name": "scipy sparse product (batches of 256) + exact top-k", "queries_per_s": qps["scipy"],
                         "per_query_call_queries_per_s": qps["scipy_per_query"]},
            "ratio": round(timed["scipy"][0] / timed["exact"][0], 3),
            "ratio_per_query_call": round(timed["scipy_per_query"][0] / timed["exact_per_query"][0], 3),
        }  # fmt: skip
        for name, enabled, fn in (
            ("seismic", seismic, lambda: base.seismic(doc_ids, doc_matrix, vocab, queries, qids, k, exact, SEISMIC,
                                                      lambda c: warm_race(c, rounds))),
            ("lucene", lucene and scale == 1, lambda: base.lucene(doc_ids, doc_matrix, vocab, queries, qids, k, exact,
                                                                  warm_race)),
        ):  # fmt: skip
            if enabled:
                try:
                    out[name] = fn()
                except MissingDependency as e:
                    out[name] = {"skipped": str(e)}
    if "queries_per_s" in out.get("lucene", {}):
        out["ratio_vs_lucene"] = round(qps["exact"] / out["lucene"]["queries_per_s"], 3)
    return out

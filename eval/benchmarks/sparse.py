"""``cascade bench sparse``: the native impact index against scipy brute force, Lucene and Seismic.

The workload (:mod:`.sparse_vectors`) defaults to SPLADE vectors of the dataset: the corpus
and queries encoded by Cascade's SPLADE encoder with the offline SPLADE-tiny checkpoint
(``model=...`` for another), weights x100 rounded to integers on both sides, cached on disk.
``vectors=bm25`` searches BM25 impacts with bag-of-words queries instead (named as such in
the output: a far lighter workload, about 5 query terms). ``scale=N`` replicates the corpus N
times (perturbed copies with distinct ids) as one larger corpus.

All searches are single-threaded over the split's queries, top ``k``, timed by
:func:`eval.bench.race` (contenders take turns, fastest round kept, each called once untimed
right before its timed run, so none pays for the previous one evicting its data from the
CPU caches):

- ours, exact: :meth:`ImpactRetriever.search_vectors` over the whole query batch, returning
  one :class:`Ranking` per query; its rankings must equal scipy's.
- ours, approx: ``mode="approx"`` (Seismic-style); recall@k against exact, and a trade-off
  curve over approximate settings (``curve=true``).
- baseline: scipy, float32 on both sides, sparse product per batch of 256 queries and a
  vectorized top-k over the score block (see :mod:`.sparse_baselines`).
- Lucene's own batch search, one thread, through Pyserini when installed (``lucene=false``
  skips it), Seismic (pyseismic-lsr) on the same vectors (``seismic=false`` skips it).
- ``sizes=[1,10,40]``: exact, approximate and scipy per corpus replication factor, to see
  where on the size axis the approximate mode starts to pay.

``plot=FILE.png``: recall against queries/s (every approximate setting, Seismic's, and the
exact searches at recall 1); with ``sizes``, also ``FILE-by-size.png``, queries/s against
corpus size.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np

from cascade.eval.bench import race, version, versions
from cascade.eval.datasets import load_dataset
from cascade.retrieval.errors import MissingDependency
from cascade.retrieval.sparse.impact import ApproxParams, ImpactRetriever

from . import sparse_baselines as base
from .sparse_vectors import SparseWorkload, load_workload, replicate

log = logging.getLogger(__name__)

#: every race here times each contender warm (see :func:`eval.bench.race`)
warm_race = partial(race, warm=True)

#: Approximate settings of the trade-off curve: build fields, and the search fields run on each build.
CURVE = [
    (
        {"summary_energy": e},
        [{"query_terms": q, "heap_factor": h} for q, h in ((5, 0.9), (8, 0.8), (12, 0.9))],
    )
    for e in (0.8, 0.9, 1.0)
]
#: pyseismic builds, each searched with several (query_cut, heap_factor): its documented MS
#: MARCO build, and a high-recall one (whole summaries) to bracket our approximate mode.
SEISMIC = [
    {"n_postings": 3500, "centroid_fraction": 0.1, "summary_energy": 0.4,
     "searches": [{"query_cut": 10, "heap_factor": 0.7}, {"query_cut": 20, "heap_factor": 0.8},
                  {"query_cut": 30, "heap_factor": 0.9}]},
    {"n_postings": 1000, "centroid_fraction": 0.1, "summary_energy": 1.0,
     "searches": [{"query_cut": 16, "heap_factor": 0.9}, {"query_cut": 30, "heap_factor": 0.95}]},
]  # fmt: skip


def _qps(n: int, secs: float) -> float:
    return round(n / secs, 1)


def _curve(w: SparseWorkload, k: int, exact, exact_fn, rounds) -> list[dict]:
    """Recall and speed of approximate settings, each raced against exact search."""
    out = []
    for build, searches in CURVE:
        t = time.perf_counter()
        index = ImpactRetriever.from_vectors(w.doc_ids, w.docs, w.vocab, w.scale, ApproxParams(**build))
        index_s = time.perf_counter() - t
        for search in searches:
            params = ApproxParams(**build, **search)
            timed = warm_race(
                {
                    "exact": exact_fn,
                    "approx": lambda i=index, p=params: i.search_vectors(
                        w.queries, k, w.query_ids, mode="approx", approx=p
                    ),
                },
                rounds,
            )
            out.append(
                {
                    "params": asdict(params),
                    "index_s": round(index_s, 2),
                    "queries_per_s": _qps(len(w.query_ids), timed["approx"][0]),
                    "recall_vs_exact": base.recall(timed["approx"][1], exact),
                    "speedup_vs_exact": round(timed["exact"][0] / timed["approx"][0], 3),
                }
            )
    return out


def _by_size(w: SparseWorkload, sizes: list[int], k: int, params: ApproxParams, rounds: int) -> list[dict]:
    """Exact, approximate (``params``) and scipy queries/s per replication factor."""
    out = []
    q32 = base.as_float32(w.queries)
    for n in sizes:
        big = replicate(w, int(n))
        index = ImpactRetriever.from_vectors(big.doc_ids, big.docs, big.vocab, big.scale, params)
        brute = base.scipy_searcher(big.docs, big.doc_ids)
        timed = warm_race({
            "exact": lambda i=index, b=big: i.search_vectors(b.queries, k, b.query_ids),
            "approx": lambda i=index, b=big: i.search_vectors(b.queries, k, b.query_ids, mode="approx"),
            "scipy": lambda f=brute, b=big: f(q32, b.query_ids, k),
        }, rounds)  # fmt: skip
        nq = len(w.query_ids)
        out.append({"replicas": int(n), "docs": len(big.doc_ids), "postings": int(big.docs.nnz),
                    **{f"{name}_queries_per_s": _qps(nq, s) for name, (s, _) in timed.items()},
                    "approx_recall_vs_exact": base.recall(timed["approx"][1], timed["exact"][1]),
                    "approx_speedup_vs_exact": round(timed["exact"][0] / timed["approx"][0], 3)})  # fmt: skip
    return out


def run(dataset_dir: Path, device: str | None = None, k: int = 10, split: str = "test", vectors: str = "splade",
        model: str | None = None, impact_scale: float = 100.0, scale: int = 1, lucene: bool = True,
        seismic: bool = True, curve: bool = True, approx: dict | None = None, engine: str = "auto",
        rounds: int = 5, sizes: list[int] | None = None, plot: Path | None = None, **_) -> dict:  # fmt: skip
    """Time exact and approximate native impact search against scipy (and Lucene, Seismic)."""
    from threadpoolctl import threadpool_limits

    ds = load_dataset(dataset_dir, split)
    workload = load_workload(ds, vectors, model, impact_scale, device)
    w = replicate(workload, scale)
    with threadpool_limits(1):
        params = ApproxParams(**(approx or {}))
        t = time.perf_counter()
        index = ImpactRetriever.from_vectors(w.doc_ids, w.docs, w.vocab, w.scale, params)
        index_s = time.perf_counter() - t
        brute = base.scipy_searcher(w.docs, w.doc_ids)
        q32 = base.as_float32(w.queries)  # the reference's own input type, made once
        if engine == "auto":
            engine = "numba" if importlib.util.find_spec("numba") else "numpy"
        queries, qids = w.queries, w.query_ids
        index.search_vectors(queries[:2], k, qids[:2], engine=engine)  # compile outside the timing
        if engine == "numba":
            index.search_vectors(queries[:2], k, qids[:2], mode="approx")

        def exact_fn():
            return index.search_vectors(queries, k, qids, engine=engine)

        timed = warm_race({
            "scipy": lambda: brute(q32, qids, k), "exact": exact_fn,
            "exact_arrays": lambda: index.search_arrays(queries, k, engine=engine),
            **({"approx": lambda: index.search_vectors(queries, k, qids, mode="approx")} if engine == "numba" else {}),
        }, rounds)  # fmt: skip
        exact, brute_rankings = timed["exact"][1], timed["scipy"][1]
        n = len(qids)
        qps = {name: _qps(n, secs) for name, (secs, _) in timed.items()}
        df = np.bincount(w.docs.indices, minlength=len(w.vocab))
        ours = {"name": f"cascade impact index, exact ({engine} engine)", "version": version("cascade-search"),
                "index_s": round(index_s, 2), "setting": "search_vectors(batch of all queries) -> list[Ranking]",
                "queries_per_s": qps["exact"], "arrays_queries_per_s": qps["exact_arrays"],
                "identical_to_brute_force": sum(a == b for a, b in zip(exact, brute_rankings, strict=True))}  # fmt: skip
        if "approx" in timed:
            ours["approx"] = {"params": asdict(params), "queries_per_s": qps["approx"],
                              "recall_vs_exact": base.recall(timed["approx"][1], exact),
                              "speedup_vs_exact": round(timed["exact"][0] / timed["approx"][0], 3)}  # fmt: skip
            if curve:
                ours["approx_curve"] = _curve(w, k, exact, exact_fn, max(2, rounds // 2))
        out = {
            "benchmark": "sparse", "dataset": str(dataset_dir), "vectors": vectors, "workload": w.description,
            "num_docs": len(w.doc_ids), "scale": scale, "num_queries": n, "k": k, "threads": 1,
            "timing": f"fastest of {rounds} rounds, contenders in turn, each called once untimed right before",
            "versions": versions("numpy", "scipy", "numba", "pyseismic-lsr", "pyserini"),
            "postings": int(w.docs.nnz), "terms_per_doc": round(w.docs.nnz / len(w.doc_ids), 1),
            "terms_per_query": round(queries.nnz / n, 1),
            "postings_per_query": round(float(df[queries.indices].sum()) / n, 1), "ours": ours,
            "baseline": {"name": "scipy sparse product + vectorized top-k", "version": version("scipy"),
                         "setting": base.SCIPY_SETTING.format(batch=256), "queries_per_s": qps["scipy"]},
            "ratio": round(timed["scipy"][0] / timed["exact"][0], 3),
        }  # fmt: skip
        for name, enabled, fn in (
            ("seismic", seismic, lambda: base.seismic(w.doc_ids, w.docs, w.vocab, queries, qids, k, exact, SEISMIC,
                                                      lambda c: warm_race(c, rounds))),
            ("lucene", lucene, lambda: base.lucene(w.doc_ids, w.docs, w.vocab, queries, qids, k, exact,
                                                   lambda c: warm_race(c, rounds))),
        ):  # fmt: skip
            if enabled:
                try:
                    out[name] = fn()
                except MissingDependency as e:
                    out[name] = {"skipped": str(e)}
        if sizes:
            out["by_size"] = _by_size(workload, sizes, k, params, max(2, rounds // 2))
    if "queries_per_s" in out.get("lucene", {}):
        out["ratio_vs_lucene"] = round(qps["exact"] / out["lucene"]["queries_per_s"], 3)
    if plot is not None:
        out["plots"] = _plot(out, Path(plot))
    return out


def _plot(out: dict, path: Path) -> list[str]:
    from cascade.eval.plots import line_chart

    ours = out["ours"]
    series = {
        "cascade approx (settings)": sorted((c["recall_vs_exact"], c["queries_per_s"]) for c in ours.get("approx_curve", [])),
        "cascade approx (defaults)": [(ours["approx"]["recall_vs_exact"], ours["approx"]["queries_per_s"])] if "approx" in ours else [],
        "cascade exact": [(1.0, ours["queries_per_s"])],
        "scipy brute force": [(1.0, out["baseline"]["queries_per_s"])],
    }  # fmt: skip
    if "runs" in out.get("seismic", {}):
        series["Seismic (pyseismic-lsr)"] = sorted(
            (r["recall_vs_exact"], r["queries_per_s"]) for r in out["seismic"]["runs"]
        )
    if "queries_per_s" in out.get("lucene", {}):
        series["Lucene batch search"] = [(out["lucene"]["recall_vs_exact"], out["lucene"]["queries_per_s"])]
    title = f"sparse top-{out['k']}, {out['num_docs']:,} docs, 1 thread"
    paths = [str(line_chart(path, series, f"recall@{out['k']} vs exact", "queries/s", title, logy=True, pareto=True,
                            notes=[out["workload"]]))]  # fmt: skip
    if "by_size" in out:
        pts = out["by_size"]
        size_series = {name: [(p["docs"], p[f"{key}_queries_per_s"]) for p in pts]
                       for name, key in (("cascade exact", "exact"), ("cascade approx", "approx"), ("scipy", "scipy"))}  # fmt: skip
        size_path = path.with_name(f"{path.stem}-by-size{path.suffix}")
        paths.append(str(line_chart(size_path, size_series, "documents", "queries/s", "sparse search cost vs corpus size",
                                    logx=True, logy=True)))  # fmt: skip
    return paths

"""The dense family of ``cascade bench scale``: faiss Flat, HNSW, IVF-PQ and IVF-SQ8 on
MiniLM-shaped synthetic vectors (384 dims), so a user can pick an index type from one table.

Vectors: :func:`cascade.eval.synthetic_vectors.minilm_vectors` (k-means clusters fitted to
real all-MiniLM-L6-v2 SciFact embeddings), a float32 memory map in the work dir. Everything
reads it shard by shard (``shard_rows`` vectors), so no step needs the whole matrix in memory:

- ``flat`` (exact): held in one faiss ``IndexFlatIP`` when the vectors fit ``memory_gb``
  (build: loading them); beyond that, out of core: each shard of the memory map is searched
  in turn and the per-shard top k merged (scores, ties by row), so 8.8M x 384 fp32 (13.5 GB)
  is searched in a bounded memory. Its top k is the reference of every recall figure.
- ``hnsw``, ``ivf-pq``, ``ivf-sq8``: the factory strings of
  :func:`cascade.retrieval.dense.retriever.index_factory_string` (what ``DenseRetriever``
  builds); IVF quantizers trained on a ``train_size`` sample, vectors added shard by shard
  from the map; HNSW with the retriever's efConstruction 200. HNSW is built up to ``hnsw_max``
  documents only (1M: on 2 cores its build grows far past an hour beyond that).

Builds run in a fresh process each (:func:`.scale.measured`: wall time, peak memory) with
``build_threads`` threads; searches in another fresh process with ``threads`` threads, the
index read from disk, the fastest of ``rounds`` warmed passes over ``queries`` queries, at
the retriever's defaults (nprobe 16, efSearch 128).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from cascade.eval.bench import version, versions
from cascade.eval.benchmarks.scale import GB, measured
from cascade.retrieval.errors import require

log = logging.getLogger(__name__)

INDEXES = ("flat", "hnsw", "ivf-pq", "ivf-sq8")


def _vectors(size: int, queries: int, workdir: Path, seed: int):
    from cascade.eval.synthetic_vectors import minilm_vectors

    return minilm_vectors(size, queries, workdir, seed)


def _faiss(threads: int):
    faiss = require("faiss", "dense")
    faiss.omp_set_num_threads(threads)
    return faiss


def exact_top_k(docs: np.ndarray, queries: np.ndarray, k: int, shard_rows: int, threads: int = 1):
    """Exact inner-product top ``k`` over a (memory-mapped) matrix, one shard at a time:
    (scores, rows), each (queries x k), best first, ties by row."""
    faiss = _faiss(threads)
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(docs), shard_rows):
        shard = np.ascontiguousarray(docs[start : start + shard_rows], dtype=np.float32)
        index = faiss.IndexFlatIP(shard.shape[1])
        index.add(shard)
        s, i = index.search(queries, min(k, len(shard)))
        best_s, best_i = np.hstack([best_s, s]), np.hstack([best_i, i + start])
        order = np.lexsort((best_i, -best_s), axis=-1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_s, best_i


def flat_run(size: int, queries: int, workdir: Path, seed: int, k: int, rounds: int, threads: int,
             memory_gb: float, shard_rows: int, out: Path) -> dict:  # fmt: skip
    """Exact search, in memory or out of core (module doc); saves the reference top k."""
    from cascade.eval.bench import race

    docs, qv, _ = _vectors(size, queries, workdir, seed)
    dim = docs.shape[1]
    in_memory = size * dim * 4 <= memory_gb * GB
    t = time.perf_counter()
    if in_memory:
        faiss = _faiss(threads)
        index = faiss.IndexFlatIP(dim)
        for s in range(0, size, shard_rows):
            index.add(np.ascontiguousarray(docs[s : s + shard_rows]))
        build_s = time.perf_counter() - t

        def search():
            return index.search(qv, k)
    else:
        build_s = 0.0  # nothing to build: the memory map is the index

        def search():
            return exact_top_k(docs, qv, k, shard_rows, threads)

    ((secs, (_, top)),) = race({"s": search}, rounds).values()
    np.save(out, top)
    return {"build_s": round(build_s, 2), "queries_per_s": round(len(qv) / secs, 1), "out_of_core": not in_memory,
            "index_gb": round(size * dim * 4 / GB, 3), "_top": top}  # fmt: skip


def build_faiss(name: str, size: int, queries: int, workdir: Path, seed: int, threads: int, shard_rows: int,
                train_size: int, out: Path) -> dict:  # fmt: skip
    """Train (on a sample) and fill (shard by shard) a faiss index from the memory map; save it."""
    from cascade.retrieval.dense.retriever import index_factory_string

    faiss = _faiss(threads)
    docs, _, _ = _vectors(size, queries, workdir, seed)
    dim = docs.shape[1]
    factory = index_factory_string(name, size, dim)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = 200  # as DenseRetriever builds it
    t = time.perf_counter()
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(size, min(size, train_size), replace=False))
        index.train(np.ascontiguousarray(docs[sample]))
    train_s = time.perf_counter() - t
    for s in range(0, size, shard_rows):
        index.add(np.ascontiguousarray(docs[s : s + shard_rows]))
    faiss.write_index(index, str(out))
    return {
        "factory": factory,
        "train_s": round(train_s, 2),
        "build_only_s": round(time.perf_counter() - t, 2),
    }


def search_faiss(size: int, queries: int, workdir: Path, seed: int, path: Path, k: int, rounds: int, threads: int,
                 nprobe: int, ef_search: int) -> dict:  # fmt: skip
    from cascade.eval.bench import race

    faiss = _faiss(threads)
    _, qv, _ = _vectors(size, queries, workdir, seed)
    index = faiss.read_index(str(path))
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = ef_search
    else:
        faiss.extract_index_ivf(index).nprobe = nprobe
    ((secs, (_, top)),) = race({"s": lambda: index.search(qv, k)}, rounds).values()
    return {"queries_per_s": round(len(qv) / secs, 1), "_top": top}


def _recall(got: np.ndarray, exact: np.ndarray, k: int) -> float:
    k = min(k, 10)
    return round(float(np.mean([len(set(g[:k].tolist()) & set(e[:k].tolist())) / k
                                for g, e in zip(got, exact, strict=True)])), 4)  # fmt: skip


def run(sizes: list[int], workdir: Path, seed: int = 0, queries: int = 1000, k: int = 10, rounds: int = 3,
        indexes: tuple[str, ...] | list[str] | str = INDEXES, threads: int = 1, build_threads: int | None = None,
        memory_gb: float = 4.0, shard_rows: int = 1 << 18, train_size: int = 100_000, hnsw_max: int = 1_000_000,
        nprobe: int = 16, ef_search: int = 128, keep_indexes: bool = False, **_) -> dict:  # fmt: skip
    """Rows per index type and size (module doc).

    Args:
        indexes: a subset of :data:`INDEXES` (a comma-separated string is accepted).
        threads: search threads (1: per-core speed); build_threads: build threads (default: all).
        memory_gb: flat search holds the vectors in memory up to this size, else goes out of core.
        shard_rows: vectors per shard read from the memory map.
        hnsw_max: HNSW is built up to this many documents only.
    """
    import shutil

    workdir = Path(workdir)
    if isinstance(indexes, str):
        indexes = [x.strip() for x in indexes.split(",") if x.strip()]
    build_threads = build_threads or len(os.sched_getaffinity(0))
    _vectors(max(sizes), queries, workdir, seed)  # generated once; children read prefixes
    rows, skipped = [], []
    for size in sizes:
        base = workdir / "dense" / f"n{size}-s{seed}"
        base.mkdir(parents=True, exist_ok=True)
        common = (size, queries, workdir, seed)
        f = measured(flat_run, *common, k, rounds, threads, memory_gb, shard_rows, base / "exact-top.npy")
        exact = f.result.pop("_top")
        rows.append(
            {"system": "flat", "size": size, "peak_gb": round(f.peak_gb, 3), **f.result, "recall@10": 1.0}
        )
        for name in indexes:
            if name == "flat":
                continue
            if name == "hnsw" and size > hnsw_max:
                skipped.append(f"hnsw at {size}")
                continue
            path = base / f"{name}.faiss"
            b = measured(build_faiss, name, *common, build_threads, shard_rows, train_size, path)
            s = measured(search_faiss, *common, path, k, rounds, threads, nprobe, ef_search)
            top = s.result.pop("_top")
            rows.append({"system": name, "size": size, "build_s": b.result.pop("build_only_s"), "peak_gb": round(b.peak_gb, 3),
                         "index_gb": round(path.stat().st_size / GB, 4), **s.result, "recall@10": _recall(top, exact, k),
                         "search_peak_gb": round(s.peak_gb, 3), **b.result})  # fmt: skip
        if not keep_indexes:
            shutil.rmtree(base, ignore_errors=True)
        log.info("dense scale %d: %s", size, [r for r in rows if r["size"] == size])
    return {
        "family": "dense", "rows": rows, "ours": "hnsw" if "hnsw" in indexes else indexes[-1], "reference": "flat",
        "settings": {"vectors": "MiniLM-shaped synthetic, 384 dims, unit norm (cascade.eval.synthetic_vectors)",
                     "queries": queries, "k": k, "rounds": rounds, "search_threads": threads,
                     "build_threads": build_threads, "flat_in_memory_up_to_gb": memory_gb, "shard_rows": shard_rows,
                     "train_size": train_size, "nprobe": nprobe, "ef_search": ef_search, "hnsw_ef_construction": 200,
                     "hnsw_max_docs": hnsw_max,
                     "hnsw_cap": "HNSW is built up to hnsw_max documents only: its build on 2 cores grows far past "
                                 "an hour beyond 1M", "skipped": skipped,
                     "recall": "recall@10 against exact (flat) top 10"},
        "baseline": {"name": "exact inner product (faiss IndexFlatIP; out of core by shards past memory_gb)",
                     "version": version("faiss-cpu"), "setting": f"{threads} search thread(s)"},
        "versions": versions("faiss-cpu"),
    }  # fmt: skip

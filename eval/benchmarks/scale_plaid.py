"""The late-interaction family of ``cascade bench scale``: the PLAID engine on ColBERT-shaped
synthetic token vectors, against exhaustive MaxSim on a sample of queries.

Vectors: :func:`cascade.eval.synthetic_vectors.token_vectors` (MiniLM token vectors of
MS MARCO-length passages projected to 128 dims, as ``cascade bench plaid`` searches; about 78
tokens per passage, so 150k documents are about 11.7M token vectors). Per size:

- build (fresh process, :func:`.scale.measured`): :meth:`PLAIDIndex.from_vectors` with the
  engine's defaults (k-means on a sample of 32 points per centroid, ``nbits`` residuals), then
  saved; ``kmeans_s`` and ``compress_s`` (assignment, residual compression and postings) split
  its build time.
- exhaustive MaxSim (fresh process): fp32 over the uncompressed vectors, documents in shards of
  ``shard_docs`` (bounded memory), per-shard top k merged; on ``queries`` sampled queries; the
  reference of every recall figure.
- PLAID search (fresh process, index loaded memory-mapped): PLAID's defaults for k and the
  engine's high-recall setting, the fastest of ``rounds`` warmed passes.

All searches use ``threads`` threads (torch and the compiled kernel).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from cascade.eval.bench import version, versions
from cascade.eval.benchmarks.scale import GB, dir_bytes, measured

log = logging.getLogger(__name__)


def _vectors(size: int, queries: int, workdir: Path, seed: int):
    from cascade.eval.synthetic_vectors import token_vectors

    return token_vectors(size, queries, workdir, seed)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def build_plaid(
    size: int, queries: int, workdir: Path, seed: int, nbits: int, threads: int, out: Path
) -> dict:
    from cascade.eval.synthetic_vectors import doc_ids
    from cascade.retrieval.late.plaid import PLAIDIndex

    _threads(threads)
    docs, _, _ = _vectors(size, queries, workdir, seed)
    t = time.perf_counter()
    index = PLAIDIndex.from_vectors(
        doc_ids(size), docs, nbits=nbits, device="cpu", seed=seed, show_progress=False
    )
    build_s = time.perf_counter() - t
    index.save(out)
    info = index.build_info
    return {"build_only_s": round(build_s, 2), "kmeans_s": round(info["kmeans_s"], 2),
            "compress_s": round(build_s - info["kmeans_s"], 2), "num_centroids": len(index.centroids),
            "embeddings": index.num_embeddings}  # fmt: skip


def exhaustive(size: int, queries: int, workdir: Path, seed: int, k: int, threads: int, shard_docs: int,
               out: Path) -> dict:  # fmt: skip
    """Exact MaxSim top ``k`` by document shards; saves it, returns queries/s (one pass)."""
    from cascade.retrieval.encoders.colbert import MultiVectors
    from cascade.retrieval.late.maxsim import MaxSim

    _threads(threads)
    docs, qv, _ = _vectors(size, queries, workdir, seed)
    off = np.asarray(docs.offsets)
    best_s, best_i = np.full((len(qv), 0), -np.inf, np.float32), np.zeros((len(qv), 0), np.int64)
    t = time.perf_counter()
    for a in range(0, size, shard_docs):
        b = min(size, a + shard_docs)
        shard = MultiVectors(docs.vectors[off[a] : off[b]], off[a : b + 1] - off[a])
        s, i = MaxSim(shard, device="cpu").search(qv, k)
        best_s, best_i = np.hstack([best_s, s]), np.hstack([best_i, i + a])
        order = np.lexsort((best_i, -best_s), axis=-1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    secs = time.perf_counter() - t
    np.save(out, best_i)
    return {"queries_per_s": round(len(qv) / secs, 3), "index_gb": round(docs.vectors.nbytes / GB, 3)}


def search_plaid(size: int, queries: int, workdir: Path, seed: int, index_dir: Path, k: int, rounds: int,
                 threads: int) -> dict:  # fmt: skip
    from cascade.eval.bench import race
    from cascade.retrieval.late.plaid import HIGH_RECALL, PLAIDIndex, SearchParams

    _threads(threads)
    _, qv, _ = _vectors(size, queries, workdir, seed)
    index = PLAIDIndex.load(index_dir, device="cpu")
    out = {}
    for label, p in (("defaults", SearchParams.for_k(k)), ("high_recall", HIGH_RECALL)):
        kw = {"ncells": p.ncells, "centroid_score_threshold": p.centroid_score_threshold, "ndocs": p.ndocs}
        ((secs, (_, ix)),) = race({"s": lambda kw=kw: index.search_vectors(qv, k, **kw)}, rounds).values()
        out[label] = {"queries_per_s": round(len(qv) / secs, 2), "_top": ix, **kw}
    return out


def _recall(got: np.ndarray, ref: np.ndarray, k: int) -> float:
    k = min(k, 10)
    return round(float(np.mean([len(set(g[:k][g[:k] >= 0].tolist()) & set(r[:k].tolist())) / k
                                for g, r in zip(got, ref, strict=True)])), 4)  # fmt: skip


def run(sizes: list[int], workdir: Path, seed: int = 0, queries: int = 100, k: int = 10, rounds: int = 3,
        nbits: int = 4, threads: int = 1, shard_docs: int = 8192, keep_indexes: bool = False, **_) -> dict:  # fmt: skip
    """Rows ``cascade plaid`` (PLAID's defaults for k), ``cascade plaid, high recall`` and
    ``exhaustive maxsim`` per size in documents (module doc).

    Args:
        queries: sampled queries, searched by every system (exhaustive MaxSim is slow on a CPU).
        nbits: residual bits per dimension.
        threads: torch / kernel threads for builds and searches.
        shard_docs: documents per exhaustive-MaxSim shard.
    """
    import shutil

    workdir = Path(workdir)
    _vectors(max(sizes), queries, workdir, seed)
    rows = []
    for size in sizes:
        base = workdir / "plaid" / f"n{size}-s{seed}"
        base.mkdir(parents=True, exist_ok=True)
        common = (size, queries, workdir, seed)
        e = measured(exhaustive, *common, k, threads, shard_docs, base / "exact-top.npy")
        ref = np.load(base / "exact-top.npy")
        rows.append({"system": "exhaustive maxsim", "size": size, "build_s": 0.0, "peak_gb": round(e.peak_gb, 3),
                     **e.result, "recall@10": 1.0})  # fmt: skip
        b = measured(build_plaid, *common, nbits, threads, base / "index")
        s = measured(search_plaid, *common, base / "index", k, rounds, threads)
        for label, name in (("defaults", "cascade plaid"), ("high_recall", "cascade plaid, high recall")):
            r = s.result[label]
            top = r.pop("_top")
            rows.append({"system": name, "size": size, "build_s": b.result["build_only_s"], "peak_gb": round(b.peak_gb, 3),
                         "index_gb": round(dir_bytes(base / "index") / GB, 4), **r,
                         "recall@10": _recall(top, ref, k), "search_peak_gb": round(s.peak_gb, 3),
                         **{key: v for key, v in b.result.items() if key != "build_only_s"}})  # fmt: skip
        if not keep_indexes:
            shutil.rmtree(base, ignore_errors=True)
        log.info("plaid scale %d: %s", size, [r for r in rows if r["size"] == size])
    return {
        "family": "plaid", "rows": rows, "ours": "cascade plaid", "reference": "exhaustive maxsim",
        "settings": {"vectors": "ColBERT-shaped synthetic token vectors, 128 dims (cascade.eval.synthetic_vectors)",
                     "queries": queries, "k": k, "rounds": rounds, "nbits": nbits, "threads": threads,
                     "shard_docs": shard_docs, "exhaustive": "fp32 MaxSim over uncompressed vectors, one pass",
                     "recall": "recall@10 against exhaustive MaxSim's top 10"},
        "baseline": {"name": "exhaustive MaxSim (torch, fp32, CPU)", "version": version("torch"),
                     "setting": f"documents in shards of {shard_docs}, {threads} thread(s)"},
        "versions": versions("torch", "numba"),
    }  # fmt: skip

"""The learned-sparse family of ``cascade bench scale``: the impact index, exact and
approximate, against Seismic (pyseismic-lsr) on SPLADE-shaped synthetic vectors.

Vectors: :func:`cascade.eval.synthetic_vectors.splade_vectors` (fitted on SPLADE-tiny's
SciFact vectors; generated once per seed in the work dir, a smaller size is a prefix of a
larger one). Per size, each system is built in a fresh process (:func:`.scale.measured`:
wall time and that process' peak memory, the input vectors held in memory included, as a
user building from vectors would) and saved; then searched in another fresh process, one
thread, ``queries`` queries at ``k``, the fastest of ``rounds`` warmed passes:

- ``cascade exact``: :class:`ImpactRetriever` without approximate blocks, the compiled exact
  kernel; its top ``k`` is the reference for every recall figure.
- ``cascade approx``: the Seismic-style mode (:class:`ApproxParams`, :data:`APPROX`).
- ``seismic``: pyseismic-lsr with :data:`SEISMIC` (its documented MS MARCO build, search
  cut and heap factor raised to bracket our recall); its own save format for ``index_gb``.

``speedup_vs_exact`` in the approximate rows is their queries/s over the exact kernel's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cascade.eval.bench import version, versions
from cascade.eval.benchmarks.scale import GB, dir_bytes, measured
from cascade.retrieval.errors import require

log = logging.getLogger(__name__)

EXACT, APPROX_NAME, SEISMIC_NAME = "cascade exact", "cascade approx", "seismic"
#: our approximate setting at scale (ApproxParams fields): on these vectors at 100k documents
#: recall@10 rises with query_terms (8: 0.76, 20: 0.92, 30: 0.95) and not with heap_factor
#: (blocks of 283-term documents have summaries too heavy to skip at summary_energy 0.9)
APPROX = {
    "max_postings": 1000,
    "block_size": 10,
    "summary_energy": 0.9,
    "query_terms": 30,
    "heap_factor": 0.9,
}
#: pyseismic build and search settings
SEISMIC = {
    "n_postings": 3500,
    "centroid_fraction": 0.1,
    "summary_energy": 0.4,
    "query_cut": 20,
    "heap_factor": 0.8,
}


def _vectors(size: int, queries: int, workdir: Path, seed: int):
    from cascade.eval.synthetic_vectors import splade_vectors

    return splade_vectors(size, queries, workdir, seed)


def _vocab(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


def build_ours(size: int, queries: int, workdir: Path, seed: int, out: Path, approx: dict | None) -> dict:
    """Build and save our index (in a child: its peak memory is the build's)."""
    import scipy.sparse as sp

    from cascade.eval.synthetic_vectors import doc_ids
    from cascade.retrieval.sparse.impact import ApproxParams, ImpactRetriever

    v = _vectors(size, queries, workdir, seed)
    docs = sp.csr_matrix((np.array(v.docs.data), np.array(v.docs.indices), v.docs.indptr), shape=v.docs.shape)
    t = time.perf_counter()
    index = ImpactRetriever.from_vectors(doc_ids(size), docs, _vocab(v.vocab_size), v.scale,
                                         ApproxParams(**approx) if approx is not None else None)  # fmt: skip
    index.save(out)
    return {"build_only_s": round(time.perf_counter() - t, 2), "postings": int(docs.nnz)}


def search_ours(size: int, queries: int, workdir: Path, seed: int, index_dir: Path, k: int, rounds: int,
                approx: dict | None, exact_out: Path | None) -> dict:  # fmt: skip
    """Load and search our index on one thread; recall against the saved exact top k."""
    from threadpoolctl import threadpool_limits

    from cascade.eval.bench import race
    from cascade.retrieval.sparse.impact import ApproxParams, ImpactRetriever

    v = _vectors(size, queries, workdir, seed)
    index = ImpactRetriever.load(index_dir)
    q = v.queries.tocsr()
    kw = {"mode": "approx", "approx": ApproxParams(**approx)} if approx else {}
    with threadpool_limits(1):
        index.search_arrays(q[:2], k, **kw)  # compile outside the timing
        if approx:
            index.forward()  # derived once when the index is loaded, not per search
        ((secs, hits),) = race({"s": lambda: index.search_arrays(q, k, **kw)}, rounds).values()
    res = {"queries_per_s": round(q.shape[0] / secs, 1)}
    if exact_out is not None:
        np.save(exact_out, hits.docs)
        res["recall@10"] = 1.0
    return {**res, "_docs": hits.docs}


def seismic_run(size: int, queries: int, workdir: Path, seed: int, out: Path, k: int, rounds: int,
                settings: dict) -> dict:  # fmt: skip
    """Build (timed on its own) and search pyseismic in one process (its save/load would be
    timed otherwise); the process' peak memory is build and search together."""
    from threadpoolctl import threadpool_limits

    from cascade.eval.bench import race
    from cascade.eval.synthetic_vectors import doc_ids

    from .sparse_baselines import _rows, _stdout_to_stderr

    seismic = require("seismic", "bench")
    v = _vectors(size, queries, workdir, seed)
    words = np.asarray(_vocab(v.vocab_size), dtype=seismic.get_seismic_string())
    ids = doc_ids(size)
    t = time.perf_counter()
    dataset = seismic.SeismicDataset()
    for did, (terms, values) in zip(ids, _rows(v.docs, words), strict=True):
        dataset.add_document(did, terms, values)
    build = {key: settings[key] for key in ("n_postings", "centroid_fraction", "summary_energy")}
    with _stdout_to_stderr():
        index = seismic.SeismicIndex.build_from_dataset(dataset, num_threads=1, **build)
    build_s = time.perf_counter() - t
    del dataset
    with _stdout_to_stderr():
        index.save(str(out))
    q_terms, q_values = zip(*_rows(v.queries.tocsr(), words), strict=True)
    qids = np.asarray([str(i) for i in range(len(q_terms))], dtype=seismic.get_seismic_string())
    with threadpool_limits(1):
        ((secs, res),) = race({"s": lambda: index.batch_search(
            qids, list(q_terms), list(q_values), k, settings["query_cut"], settings["heap_factor"], num_threads=1)},
            rounds).values()  # fmt: skip
    found = np.full((len(qids), k), -1, np.int64)
    for hits in res:
        if hits:
            found[int(hits[0][0]), : len(hits)] = [int(h[2][1:]) for h in hits]
    return {"build_s": round(build_s, 2), "queries_per_s": round(len(qids) / secs, 1), "_docs": found}


def _recall(got: np.ndarray, exact: np.ndarray, k: int) -> float:
    per = []
    for g, e in zip(got, exact, strict=True):
        e = set(e[:k][e[:k] >= 0].tolist())
        if e:
            per.append(len(e & set(g[:k].tolist())) / len(e))
    return round(float(np.mean(per)), 4) if per else 1.0


def _row(system: str, size: int, build, search, index_dir: Path, exact: np.ndarray | None, k: int) -> dict:
    r = dict(search.result)
    docs = r.pop("_docs")
    built = r.pop("build_s", None) if build is None else build.result["build_only_s"]
    row = {"system": system, "size": size, "build_s": round(built, 2),
           "peak_gb": round((build or search).peak_gb, 3), "index_gb": round(dir_bytes(index_dir) / GB, 4), **r,
           "search_peak_gb": round(search.peak_gb, 3)}  # fmt: skip
    if exact is not None:
        row["recall@10"] = _recall(docs, exact, min(k, 10))
    return row


def run(sizes: list[int], workdir: Path, seed: int = 0, queries: int = 500, k: int = 10, rounds: int = 3,
        approx: dict | None = None, seismic: bool = True, seismic_settings: dict | None = None,
        approx_max_size: int | None = None,
        keep_indexes: bool = False, **_) -> dict:  # fmt: skip
    """Rows for ``cascade exact``, ``cascade approx`` and ``seismic`` at each size (module doc).

    Args:
        queries: synthetic queries searched (and timed) per size.
        approx: :class:`ApproxParams` fields for our approximate mode (default :data:`APPROX`).
        approx_max_size: build our approximate mode only up to this many documents (its
            build, which clusters every kept posting list, is the costly part of a run; its
            time and memory are in RESULTS.md); ``None``: every size.
        seismic: also run pyseismic-lsr (skipped with a note when it is not installed).
        seismic_settings: its build and search settings (default :data:`SEISMIC`).
        keep_indexes: leave the built indexes in the work dir.
    """
    import shutil

    workdir = Path(workdir)
    approx = {**APPROX, **(approx or {})}
    sset = {**SEISMIC, **(seismic_settings or {})}
    _vectors(max(sizes), queries, workdir, seed)  # generate once, here; every child reads the prefix
    rows, notes = [], {}
    for size in sizes:
        base = workdir / "impact" / f"n{size}-s{seed}"
        base.mkdir(parents=True, exist_ok=True)
        common = (size, queries, workdir, seed)
        b = measured(build_ours, *common, base / "exact", None)
        s = measured(search_ours, *common, base / "exact", k, rounds, None, base / "exact-top.npy")
        exact = np.load(base / "exact-top.npy")
        rows.append(_row(EXACT, size, b, s, base / "exact", None, k))
        rows[-1]["recall@10"], rows[-1]["postings"] = 1.0, b.result["postings"]
        exact_qps = rows[-1]["queries_per_s"]
        if approx_max_size is None or size <= approx_max_size:
            b = measured(build_ours, *common, base / "approx", approx)
            s = measured(search_ours, *common, base / "approx", k, rounds, approx, None)
            rows.append(_row(APPROX_NAME, size, b, s, base / "approx", exact, k))
            rows[-1]["speedup_vs_exact"] = round(rows[-1]["queries_per_s"] / exact_qps, 2)
        else:
            notes[f"approx_{size}"] = f"not built: past approx_max_size={approx_max_size}"
        if seismic:
            try:
                s = measured(seismic_run, *common, base / "seismic", k, rounds, sset)
            except Exception as e:  # not installed, or failed at this size: the row is left out
                notes[f"seismic_{size}"] = str(e).splitlines()[0]
            else:
                rows.append(_row(SEISMIC_NAME, size, None, s, base / "seismic.index.seismic", exact, k))
                rows[-1]["speedup_vs_exact"] = round(rows[-1]["queries_per_s"] / exact_qps, 2)
        if not keep_indexes:
            shutil.rmtree(base, ignore_errors=True)
        log.info("impact scale %d: %s", size, [r for r in rows if r["size"] == size])
    return {
        "family": "impact", "rows": rows, "ours": APPROX_NAME, "reference": SEISMIC_NAME,
        "settings": {"vectors": "SPLADE-shaped synthetic (cascade.eval.synthetic_vectors.splade_vectors), "
                                "integer impacts x100", "queries": queries, "k": k, "rounds": rounds,
                     "threads": 1, "approx": asdict(_params(approx)), "seismic": sset,
                     "recall": "recall@10 against cascade exact's top 10", **notes},
        "baseline": {"name": "Seismic (pyseismic-lsr, Rust)", "version": version("pyseismic-lsr"),
                     "setting": f"build {[sset[x] for x in ('n_postings', 'centroid_fraction', 'summary_energy')]}, "
                                f"query_cut {sset['query_cut']}, heap_factor {sset['heap_factor']}, 1 thread"},
        "versions": versions("numba", "scipy", "pyseismic-lsr"),
    }  # fmt: skip


def _params(approx: dict):
    from cascade.retrieval.sparse.impact import ApproxParams

    return ApproxParams(**approx)

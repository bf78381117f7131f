"""``cascade bench plaid``: the PLAID engine against exhaustive MaxSim and PyLate's PLAID.

All on the same token vectors (the multi-vector model's output, encoded once and cached):
index build time and bytes, queries/s and recall@k against exhaustive MaxSim over the
uncompressed vectors, nDCG@10 of each. PyLate's PLAID index (Stanford's code, with its
compiled extension; version from the installed package) runs on the same vectors when
``pylate`` is installed. Every search is timed as the fastest of ``rounds`` warmed rounds;
the exhaustive MaxSim is timed at its best setting (fp16 tensor-core GEMMs on a GPU) while
the reference ranking for recall is scored in fp32.

The multi-vector model defaults to MiniLM token vectors (``tokens`` format: L2-normalized
last hidden states, queries up to 32 tokens, documents up to 256) with a seeded random
orthonormal projection to 128 dims; ``projection_dim=None`` keeps 384. The corpus vectors
are cached without projection and projected on load, which equals encoding with the
projection (the projection is linear and each vector is re-normalized after it).

The default ``nbits=4`` is the engine's default; ``compact_nbits=2`` also compresses the
same clustering at 2 bits (centroids reused, so its build time is the compression alone)
and reports its size and recall.

``device="cuda"`` runs our build and both searches on the GPU; ``sizes=[...]`` also times
PLAID and brute force per corpus size N (where PLAID overtakes): the first N documents, or,
past the dataset's size, the dataset replicated with noisy copies of its token vectors
(:func:`replicate`), so a GPU run can show the crossover without encoding a bigger corpus.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from cascade.eval.bench import race, version, versions
from cascade.eval.datasets import cache_dir, load_dataset
from cascade.eval.metrics import evaluate
from cascade.retrieval.encoders.colbert import ColBERTEncoder, MultiVectors, random_orthonormal
from cascade.retrieval.encoders.token_vectors import encode_corpus, load_token_vectors
from cascade.retrieval.late.maxsim import MaxSim
from cascade.retrieval.late.plaid import HIGH_RECALL, PLAIDIndex, SearchParams
from cascade.retrieval.models import DEFAULT_DENSE_MODEL
from cascade.retrieval.types import Ranking

log = logging.getLogger(__name__)


def corpus_vectors(ds, model: str, vectors_dir: Path | None, device: str | None) -> tuple[np.ndarray, MultiVectors]:
    """The corpus' unprojected token vectors, encoded once and cached (fp16)."""
    if vectors_dir is None:
        key = hashlib.sha256(f"{ds.name}|{ds.fingerprint}|{model}".encode()).hexdigest()[:12]
        vectors_dir = cache_dir() / "token_vectors" / f"{ds.name}-{key}"
    if not (vectors_dir / "manifest.json").is_file():
        encoder = ColBERTEncoder(model, format="tokens", device=device, show_progress=True)
        encode_corpus(ds.corpus(), encoder, vectors_dir)
    ids, mv, _ = load_token_vectors(vectors_dir)
    return ids, mv


def project(mv: MultiVectors, w: np.ndarray | None, chunk: int = 1 << 18) -> MultiVectors:
    """normalize(v @ w.T) row by row (fp16 out); ``w=None`` returns the vectors as they are."""
    if w is None:
        return mv
    out = np.empty((len(mv.vectors), len(w)), np.float16)
    for s in range(0, len(out), chunk):
        x = np.asarray(mv.vectors[s : s + chunk], np.float32) @ w.T
        out[s : s + chunk] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return MultiVectors(out, np.asarray(mv.offsets))


def replicate(doc_ids: np.ndarray, docs: MultiVectors, n: int, noise: float = 0.3, seed: int = 0):
    """``n`` documents: the first ``n``, or every document then noisy copies of them in turn.

    A copy of document ``i`` is ``normalize(v + e)`` per token, ``e`` Gaussian with expected
    norm ``noise`` (0.3: cosine about 0.96 to the original), so copies are near but not equal.
    """
    base = len(docs)
    if n <= base:
        return doc_ids[:n], MultiVectors(docs.vectors[: docs.offsets[n]], np.asarray(docs.offsets[: n + 1]))
    src = np.arange(n) % base
    lens = np.diff(np.asarray(docs.offsets))[src]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    dim = docs.vectors.shape[1]
    out = np.empty((offsets[-1], dim), np.float16)
    out[: docs.offsets[-1]] = docs.vectors
    rng = np.random.default_rng(seed)
    total = int(docs.offsets[-1])
    for s in range(total, len(out), total):  # one pass per copy of the corpus
        m = min(total, len(out) - s)
        x = np.asarray(docs.vectors[:m], np.float32) + rng.standard_normal((m, dim), np.float32) * (noise / np.sqrt(dim))
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.array([f"{doc_ids[i]}#{j // base}" if j >= base else doc_ids[i] for j, i in enumerate(src)])
    return ids, MultiVectors(out, offsets)


def _recall(got: np.ndarray, ref: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(g[:k][g[:k] >= 0]) & set(r[:k])) / k for g, r in zip(got, ref, strict=True)]))


def _ndcg(ds, doc_ids, queries, scores, idx) -> float:
    run = {q.id: Ranking.from_scores(q.id, doc_ids[i[i >= 0]], s[i >= 0]) for q, s, i in zip(queries, scores, idx, strict=True)}
    return round(evaluate(run, ds.qrels, ["ndcg@10"])["ndcg@10"], 4)


def _timed(fn, rounds: int = 3, device=None):
    """Fastest of ``rounds`` runs, each after an untimed warm-up call (:func:`eval.bench.race`),
    synchronizing a GPU before the clock stops."""
    import torch

    def run():
        out = fn()
        if device is not None and torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        return out

    return race({"fn": run}, rounds=rounds, warm=True)["fn"]


def brute_force(docs: MultiVectors, device) -> MaxSim:
    """The timed exhaustive MaxSim at its best setting: fp16 GEMMs on tensor cores on a GPU,
    fp32 on a CPU."""
    import torch

    cuda = device is not None and torch.device(device).type == "cuda"
    return MaxSim(docs, device=device, gemm_dtype="fp16" if cuda else None)


def _pylate(doc_ids, docs: MultiVectors, queries: MultiVectors, k: int, nbits: int, rounds: int, device) -> dict:
    """PyLate's PLAID on the same vectors: build, then its defaults and PLAID's k<=10 ones,
    each warmed and timed over ``rounds``."""
    import torch
    from pylate import indexes

    folder = Path(tempfile.mkdtemp(prefix="pylate-plaid-"))
    try:
        t = time.perf_counter()
        index = indexes.PLAID(index_folder=str(folder), index_name="bench", override=True, nbits=nbits)
        index.add_documents(
            documents_ids=[str(i) for i in doc_ids],
            documents_embeddings=[torch.from_numpy(np.asarray(docs[i], np.float32)) for i in range(len(docs))],
        )
        build_s = time.perf_counter() - t
        qs = [torch.from_numpy(np.asarray(queries[i], np.float32)) for i in range(len(queries))]
        pos = {str(d): i for i, d in enumerate(doc_ids)}
        out = {"name": "pylate-plaid", "version": version("pylate"), "build_s": round(build_s, 1),
               "setting": f"indexes.PLAID(nbits={nbits}), its defaults and PLAID's k<=10 search settings; "
                          f"fastest of {rounds} warmed rounds"}  # fmt: skip
        for label, kw in (("defaults", {}), ("plaid_k10", {"n_ivf_probe": 1, "n_full_scores": 256, "centroid_score_threshold": 0.5})):
            try:
                s, res = _timed(lambda kw=kw: index(qs, k=k, **kw), rounds, device)
            except TypeError:  # this version does not take per-call settings
                continue
            idx = np.array([[pos[h["id"]] for h in r] + [-1] * (k - len(r)) for r in res])
            out[label] = {"queries_per_s": round(len(qs) / s, 2), "idx": idx}
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(
    dataset_dir: Path,
    device: str | None = None,
    k: int = 10,
    nbits: int = 4,
    compact_nbits: int | None = 2,
    projection_dim: int | None = 128,
    model: str = DEFAULT_DENSE_MODEL,
    split: str = "test",
    exhaustive_queries: int | None = None,
    vectors_dir: str | Path | None = None,
    pylate: bool = True,
    sizes: list[int] | None = None,
    store_vectors: bool = False,
    rounds: int = 3,
    plot: Path | None = None,
    **_,
) -> dict:
    """Build and search PLAID on a dataset's token vectors; see the module doc.

    Args:
        dataset_dir: a BEIR-layout dataset (or its name).
        device: ``cuda`` to build and search on a GPU; default CPU.
        k: hits per query (PLAID's defaults are chosen by k).
        nbits: residual bits per dimension (the engine's default, 4).
        compact_nbits: also compress the same clustering at these bits (None: skip).
        projection_dim: project the 384-dim MiniLM vectors to this many dims (None: keep).
        exhaustive_queries: time brute force on only this many queries (it is slow on CPU);
            recall is always measured on every query.
        vectors_dir: where the unprojected corpus vectors are cached.
        pylate: also run PyLate's PLAID if it is installed.
        sizes: also time PLAID vs brute force per corpus size N (see :func:`replicate`).
        store_vectors: build with fp16 originals (exact last stage, so HIGH_RECALL's recall is
            not capped by the compression); the size figures count the compressed arrays only.
        rounds: every search (ours, exhaustive, PyLate) is timed as the fastest of this many
            rounds, each after an untimed warm-up call.
        plot: recall against queries/s of every setting (and, with ``sizes``, queries/s against
            corpus size in ``FILE-by-size.png``).
    """
    import torch

    from .dense import one_device

    device = one_device(device)  # one GPU for every contender
    ds = load_dataset(dataset_dir, split)
    queries = ds.queries
    doc_ids, base = corpus_vectors(ds, model, Path(vectors_dir) if vectors_dir else None, device)
    encoder = ColBERTEncoder(model, format="tokens", device=device, projection_dim=projection_dim)
    w = None if projection_dim is None else random_orthonormal(base.vectors.shape[1], projection_dim, 0)
    docs = project(base, w)
    qv = encoder.encode_queries([q.text for q in queries])
    fp16_bytes = int(docs.vectors.shape[0] * docs.vectors.shape[1] * 2)

    # exhaustive MaxSim: the reference ranking (all queries, fp32 scoring) and its speed at its
    # best setting (fp16 tensor cores on a GPU)
    ref_scores, ref_idx = MaxSim(docs, device=device).search(qv, k)
    brute = brute_force(docs, device)
    n_timed = min(len(queries), exhaustive_queries or len(queries))
    sub = MultiVectors.from_list([qv[i] for i in range(n_timed)])
    brute_s, _ = _timed(lambda: brute.search(sub, k), rounds, device)

    t = time.perf_counter()
    index = PLAIDIndex.from_vectors(
        doc_ids, docs, nbits=nbits, device=device, store_vectors=store_vectors, show_progress=False
    )
    build_s = time.perf_counter() - t
    ours: dict = {
        "name": "cascade-plaid", "device": str(index.device), "build_s": round(build_s, 1),
        "kmeans_s": index.build_info["kmeans_s"], **_size(index, fp16_bytes), "store_vectors": store_vectors,
        "num_centroids": len(index.centroids), "num_embeddings": index.num_embeddings,
    }  # fmt: skip
    torch.set_grad_enabled(False)
    measure = (ds, doc_ids, queries, qv, k, ref_idx, rounds)
    ours["defaults"] = _measure(index, SearchParams.for_k(k), *measure)
    ours["high_recall"] = _measure(index, HIGH_RECALL, *measure)
    if compact_nbits and compact_nbits != nbits:
        t = time.perf_counter()
        compact = PLAIDIndex.from_vectors(
            doc_ids, docs, nbits=compact_nbits, centroids=index.centroids, device=device, show_progress=False
        )  # fmt: skip
        ours["compact"] = {
            "nbits": compact_nbits, "build_s_without_kmeans": round(time.perf_counter() - t, 1),
            **_size(compact, fp16_bytes), "defaults": _measure(compact, SearchParams.for_k(k), *measure),
        }  # fmt: skip
    exhaustive = {
        "name": "exhaustive-maxsim", "version": version("torch"),
        "setting": ("fp16 GEMMs on tensor cores (torch), max and sum in fp32" if brute.low_precision
                    else "fp32 GEMMs (torch, CPU)") + f"; fastest of {rounds} warmed rounds",
        "queries_per_s": round(n_timed / brute_s, 2), "timed_queries": n_timed,
        "ndcg@10": _ndcg(ds, doc_ids, queries, ref_scores, ref_idx),
    }  # fmt: skip
    result = {
        "benchmark": "plaid", "dataset": str(dataset_dir), "num_docs": len(doc_ids), "num_queries": len(queries),
        "k": k, "nbits": nbits, "dim": int(docs.vectors.shape[1]), "threads": torch.get_num_threads(),
        "versions": versions("torch", "pylate"),
        "ours": ours, "exhaustive": exhaustive,
        "speedup_vs_exhaustive": round(ours["defaults"]["queries_per_s"] / exhaustive["queries_per_s"], 2),
    }  # fmt: skip
    baseline = exhaustive
    if pylate:
        try:
            ref = _pylate(doc_ids, docs, qv, k, nbits, rounds, device)
        except ImportError:
            result["pylate"] = "not installed (pip install pylate==1.2.0 without changing torch)"
        else:
            for label in ("defaults", "plaid_k10"):
                if label in ref:
                    ref[label][f"recall@{k}"] = round(_recall(ref[label].pop("idx"), ref_idx, k), 4)
            baseline = ref
    result["baseline"] = baseline
    result["ratio"] = round(ours["defaults"]["queries_per_s"] / baseline.get("plaid_k10", baseline)["queries_per_s"], 2)
    if sizes:
        result["by_size"] = [_size_point(doc_ids, docs, qv, n, k, nbits, device, rounds) for n in sizes]
        faster = [p["docs"] for p in result["by_size"] if p["plaid_qps"] > p["brute_qps"]]
        result["plaid_faster_from_docs"] = min(faster) if faster else None
    if plot is not None:
        result["plots"] = _plot(result, Path(plot))
    return result


def _plot(result: dict, path: Path) -> list[str]:
    from cascade.eval.plots import line_chart

    k, ours = result["k"], result["ours"]
    series = {f"cascade PLAID {label}": [(ours[label][f"recall@{k}"], ours[label]["queries_per_s"])]
              for label in ("defaults", "high_recall")}  # fmt: skip
    if "compact" in ours:
        c = ours["compact"]["defaults"]
        series[f"cascade PLAID {ours['compact']['nbits']}-bit"] = [(c[f"recall@{k}"], c["queries_per_s"])]
    base = result["baseline"]
    if base.get("name") == "pylate-plaid":
        series["PyLate PLAID"] = sorted((base[lb][f"recall@{k}"], base[lb]["queries_per_s"])
                                        for lb in ("defaults", "plaid_k10") if lb in base)  # fmt: skip
    series["exhaustive MaxSim"] = [(1.0, result["exhaustive"]["queries_per_s"])]
    paths = [str(line_chart(path, series, f"recall@{k} vs exhaustive", "queries/s",
                            f"PLAID, {result['num_docs']:,} docs", logy=True, pareto=True))]  # fmt: skip
    if "by_size" in result:
        pts = result["by_size"]
        size = {"cascade PLAID": [(p["docs"], p["plaid_qps"]) for p in pts],
                "exhaustive MaxSim": [(p["docs"], p["brute_qps"]) for p in pts]}  # fmt: skip
        paths.append(str(line_chart(path.with_name(f"{path.stem}-by-size{path.suffix}"), size, "documents",
                                    "queries/s", "PLAID vs exhaustive by corpus size", logx=True, logy=True)))  # fmt: skip
    return paths


def _size(index: PLAIDIndex, fp16_bytes: int) -> dict:
    """The compressed index's bytes (stored fp16 originals not counted) and their share of fp16."""
    compressed = index.nbytes() - (index.vectors.nbytes if index.vectors is not None else 0)
    return {"index_bytes": compressed, "fp16_bytes": fp16_bytes, "size_vs_fp16": round(compressed / fp16_bytes, 4)}


def _measure(index: PLAIDIndex, params: SearchParams, ds, doc_ids, queries, qv: MultiVectors, k: int, ref_idx,
             rounds: int = 3) -> dict:  # fmt: skip
    """Queries/s (fastest of warmed rounds), recall@k against exhaustive and nDCG@10 with ``params``."""
    kw = {"ncells": params.ncells, "centroid_score_threshold": params.centroid_score_threshold, "ndocs": params.ndocs}
    s, (sc, ix) = _timed(lambda: index.search_vectors(qv, k, **kw), rounds, index.device)
    return {
        **kw, "queries_per_s": round(len(queries) / s, 2), f"recall@{k}": round(_recall(ix, ref_idx, k), 4),
        "ndcg@10": _ndcg(ds, doc_ids, queries, sc, ix),
    }  # fmt: skip


def _size_point(doc_ids, docs: MultiVectors, qv: MultiVectors, n: int, k: int, nbits: int, device, rounds: int) -> dict:
    """PLAID (k defaults) vs brute force queries/s on a corpus of ``n`` documents (:func:`replicate`)."""
    ids, sub = replicate(doc_ids, docs, n)
    brute = brute_force(sub, device)
    brute_s, (_, ref) = _timed(lambda: brute.search(qv, k), rounds, device)
    t = time.perf_counter()
    index = PLAIDIndex.from_vectors(ids, sub, nbits=nbits, device=device, show_progress=False)
    build_s = time.perf_counter() - t
    plaid_s, (_, ix) = _timed(lambda: index.search_vectors(qv, k), rounds, device)
    return {
        "docs": len(ids), "embeddings": int(sub.offsets[-1]), "build_s": round(build_s, 1),
        "plaid_qps": round(len(qv) / plaid_s, 1), "brute_qps": round(len(qv) / brute_s, 1),
        "speedup": round(brute_s / plaid_s, 2), f"recall@{k}": round(_recall(ix, ref, k), 4),
    }  # fmt: skip

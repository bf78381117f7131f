"""``cascade bench plaid``: the PLAID engine against exhaustive MaxSim and PyLate's PLAID.

All on the same token vectors (the multi-vector model's output, encoded once and cached):
index build time and bytes, queries/s and recall@k against exhaustive MaxSim over the
uncompressed vectors, nDCG@10 of each. PyLate 1.2.0's PLAID index (Stanford's code, with
its compiled extension) runs on the same vectors when ``pylate`` is installed.

The multi-vector model defaults to MiniLM token vectors (``tokens`` format: L2-normalized
last hidden states, queries up to 32 tokens, documents up to 256) with a seeded random
orthonormal projection to 128 dims; ``projection_dim=None`` keeps 384. The corpus vectors
are cached without projection and projected on load, which equals encoding with the
projection (the projection is linear and each vector is re-normalized after it).

``device="cuda"`` runs our build and both searches on the GPU; ``sizes=[...]`` also times
PLAID and brute force on the first N documents for each N (where PLAID overtakes).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from eval.datasets import cache_dir, load_dataset
from eval.metrics import evaluate
from indexing.colbert_encode import encode_corpus, load_token_vectors
from retrieval.colbert import ColBERTEncoder, MultiVectors, random_orthonormal
from retrieval.maxsim import MaxSim
from retrieval.models import DEFAULT_DENSE_MODEL
from retrieval.plaid import HIGH_RECALL, PLAIDIndex, SearchParams
from retrieval.types import Ranking

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


def _recall(got: np.ndarray, ref: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(g[:k][g[:k] >= 0]) & set(r[:k])) / k for g, r in zip(got, ref, strict=True)]))


def _ndcg(ds, doc_ids, queries, scores, idx) -> float:
    run = {q.id: Ranking.from_scores(q.id, doc_ids[i[i >= 0]], s[i >= 0]) for q, s, i in zip(queries, scores, idx, strict=True)}
    return round(evaluate(run, ds.qrels, ["ndcg@10"])["ndcg@10"], 4)


def _timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _pylate(doc_ids, docs: MultiVectors, queries: MultiVectors, k: int, nbits: int) -> dict:
    """PyLate 1.2.0 PLAID on the same vectors: build, then its defaults and PLAID's k<=10 ones."""
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
        out = {"name": "pylate-plaid", "version": "1.2.0", "build_s": round(build_s, 1)}
        for label, kw in (("defaults", {}), ("plaid_k10", {"n_ivf_probe": 1, "n_full_scores": 256, "centroid_score_threshold": 0.5})):
            try:
                s, res = _timed(lambda kw=kw: index(qs, k=k, **kw))
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
    nbits: int = 2,
    projection_dim: int | None = 128,
    model: str = DEFAULT_DENSE_MODEL,
    split: str = "test",
    exhaustive_queries: int | None = None,
    vectors_dir: str | Path | None = None,
    pylate: bool = True,
    sizes: list[int] | None = None,
    store_vectors: bool = False,
    **_,
) -> dict:
    """Build and search PLAID on a dataset's token vectors; see the module doc.

    Args:
        dataset_dir: a BEIR-layout dataset (or its name).
        device: ``cuda`` to build and search on a GPU; default CPU.
        k: hits per query (PLAID's defaults are chosen by k).
        nbits: residual bits per dimension.
        projection_dim: project the 384-dim MiniLM vectors to this many dims (None: keep).
        exhaustive_queries: time brute force on only this many queries (it is slow on CPU);
            recall is always measured on every query.
        vectors_dir: where the unprojected corpus vectors are cached.
        pylate: also run PyLate's PLAID if it is installed.
        sizes: also time PLAID vs brute force on the first N documents, for each N.
        store_vectors: build with fp16 originals (exact last stage; needed for HIGH_RECALL's
            recall >= 0.99); the size figures count the compressed arrays only.
    """
    import torch

    ds = load_dataset(dataset_dir, split)
    queries = ds.queries
    doc_ids, base = corpus_vectors(ds, model, Path(vectors_dir) if vectors_dir else None, device)
    encoder = ColBERTEncoder(model, format="tokens", device=device, projection_dim=projection_dim)
    w = None if projection_dim is None else random_orthonormal(base.vectors.shape[1], projection_dim, 0)
    docs = project(base, w)
    qv = encoder.encode_queries([q.text for q in queries])
    fp16_bytes = int(docs.vectors.shape[0] * docs.vectors.shape[1] * 2)

    # exhaustive MaxSim: the reference ranking (all queries) and its speed
    brute = MaxSim(docs, device=device)
    ref_scores, ref_idx = brute.search(qv, k)
    n_timed = min(len(queries), exhaustive_queries or len(queries))
    sub = MultiVectors.from_list([qv[i] for i in range(n_timed)])
    brute_s, _ = _timed(lambda: brute.search(sub, k))

    t = time.perf_counter()
    index = PLAIDIndex.from_vectors(
        doc_ids, docs, nbits=nbits, device=device, store_vectors=store_vectors, show_progress=False
    )
    build_s = time.perf_counter() - t
    compressed = index.nbytes() - (index.vectors.nbytes if index.vectors is not None else 0)
    ours: dict = {
        "name": "cascade-plaid", "device": str(index.device), "build_s": round(build_s, 1),
        "kmeans_s": index.build_info["kmeans_s"], "index_bytes": compressed,
        "fp16_bytes": fp16_bytes, "size_vs_fp16": round(compressed / fp16_bytes, 4), "store_vectors": store_vectors,
        "num_centroids": len(index.centroids), "num_embeddings": index.num_embeddings,
    }  # fmt: skip
    torch.set_grad_enabled(False)
    for label, params in (("defaults", SearchParams.for_k(k)), ("high_recall", HIGH_RECALL)):
        kw = {"ncells": params.ncells, "centroid_score_threshold": params.centroid_score_threshold, "ndocs": params.ndocs}
        index.search_vectors(MultiVectors.from_list([qv[0]]), k, **kw)  # warm-up
        s, (sc, ix) = _timed(lambda kw=kw: index.search_vectors(qv, k, **kw))
        ours[label] = {
            **kw, "queries_per_s": round(len(queries) / s, 2), f"recall@{k}": round(_recall(ix, ref_idx, k), 4),
            "ndcg@10": _ndcg(ds, doc_ids, queries, sc, ix),
        }  # fmt: skip
    exhaustive = {
        "name": "exhaustive-maxsim", "queries_per_s": round(n_timed / brute_s, 2), "timed_queries": n_timed,
        "ndcg@10": _ndcg(ds, doc_ids, queries, ref_scores, ref_idx),
    }  # fmt: skip
    result = {
        "benchmark": "plaid", "dataset": str(dataset_dir), "num_docs": len(doc_ids), "num_queries": len(queries),
        "k": k, "nbits": nbits, "dim": int(docs.vectors.shape[1]), "threads": torch.get_num_threads(),
        "ours": ours, "exhaustive": exhaustive,
        "speedup_vs_exhaustive": round(ours["defaults"]["queries_per_s"] / exhaustive["queries_per_s"], 2),
    }  # fmt: skip
    baseline = exhaustive
    if pylate:
        try:
            ref = _pylate(doc_ids, docs, qv, k, nbits)
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
        result["by_size"] = [_size_point(doc_ids, docs, qv, n, k, nbits, device) for n in sizes]
    return result


def _size_point(doc_ids, docs: MultiVectors, qv: MultiVectors, n: int, k: int, nbits: int, device) -> dict:
    """PLAID (k defaults) vs brute force queries/s on the first ``n`` documents."""
    n = min(n, len(docs))
    sub = MultiVectors(docs.vectors[: docs.offsets[n]], np.asarray(docs.offsets[: n + 1]))
    brute = MaxSim(sub, device=device)
    brute_s, (_, ref) = _timed(lambda: brute.search(qv, k), repeat=2)
    index = PLAIDIndex.from_vectors(doc_ids[:n], sub, nbits=nbits, device=device, show_progress=False)
    plaid_s, (_, ix) = _timed(lambda: index.search_vectors(qv, k), repeat=2)
    return {
        "docs": n, "embeddings": int(sub.offsets[-1]), "plaid_qps": round(len(qv) / plaid_s, 1),
        "brute_qps": round(len(qv) / brute_s, 1), f"recall@{k}": round(_recall(ix, ref, k), 4),
    }  # fmt: skip

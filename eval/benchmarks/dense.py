"""Dense benchmarks.

- ``dense-encode``: our encoder against ``SentenceTransformer.encode`` on the same model,
  texts (with our document prompt), device (one GPU each), dtype and thread count, the
  reference at the best of a batch-size sweep; docs/s of both, their ratio, the sweep, the
  largest absolute difference between the two sets of embeddings, and on a GPU the share of
  bf16 peak.
- ``dense-search``: HNSW and IVF indexes against exact search on the dataset's embeddings
  (the cached ``dense`` preset index): recall@10 and queries/s.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np

from cascade.eval.bench import best_of_sweep, race, synced, version, versions
from cascade.eval.datasets import load_dataset
from cascade.retrieval.errors import require
from cascade.retrieval.models import DEFAULT_DENSE_MODEL, resolve_model_path

log = logging.getLogger(__name__)

#: Dense bf16 tensor-core peaks (FLOP/s) of GPUs we expect, by a substring of the device name.
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


#: sentence-transformers batch sizes swept by ``dense-encode`` (its default is 32)
ST_BATCH_SIZES = (16, 32, 64, 128)


def one_device(device: str | None) -> str:
    """``cuda`` without an index becomes ``cuda:0``: each side of a race gets one GPU (our
    encoder would otherwise spread over every visible GPU where the reference uses one)."""
    from cascade.retrieval.models import resolve_device

    dev = resolve_device(device)
    return "cuda:0" if dev.type == "cuda" and dev.index is None else str(dev)


def reference_dtypes(ours_dtype) -> list:
    """The precisions a reference runs at: fp32 (its default) and, when ours differs, ours."""
    import torch

    return [torch.float32] + ([ours_dtype] if ours_dtype != torch.float32 else [])


def encode(dataset_dir: Path, device: str | None = None, num_docs: int = 500, all_docs: bool = False,
           model: str = DEFAULT_DENSE_MODEL, batch_sizes: list[int] | tuple[int, ...] = ST_BATCH_SIZES,
           rounds: int = 2, threads: int = 2, dtype: str | None = None, plot: Path | None = None, **_) -> dict:  # fmt: skip
    """``cascade bench dense-encode``: docs/s of our encoder and sentence-transformers'.

    Ours runs at ``dtype`` (default ``auto``: bf16 on a bf16-capable CPU or a GPU); the
    reference runs at fp32 (its default: the headline ``ratio``) and at our precision (the
    model cast, ``ratio_same_dtype``), each at the best of a batch-size sweep.

    Args:
        num_docs: the first N documents (``all_docs`` for the whole corpus).
        batch_sizes: sentence-transformers' batch sizes, swept. Ours batches by tokens.
        rounds: timed runs of each, taking turns; the fastest of each counts.
        threads: torch CPU threads, the same for both.
        plot: docs/s against sentence-transformers' batch size, ours as a line.
    """
    torch = require("torch", "models")
    st = require("sentence_transformers", "models")
    from cascade.retrieval.encoders.dense import DenseEncoder
    from cascade.retrieval.models import dtype_name

    torch.set_num_threads(threads)
    ds = load_dataset(dataset_dir, "test")
    docs = ds.corpus() if all_docs else itertools.islice(ds.corpus(), num_docs)
    texts = [d.contents for d in docs]
    ours = DenseEncoder(model, device=one_device(device), dtype=dtype, show_progress=False)
    prompt = ours.config.document_prompt or None  # the same input text on both sides
    refs = {}
    for dt in reference_dtypes(ours.dtype):
        refs[dtype_name(dt)] = st.SentenceTransformer(resolve_model_path(model), device=str(ours.device)).to(dt)

    sync = synced(ours.device)

    def st_encode(ref, bs):
        return sync(lambda: ref.encode(texts, prompt=prompt, batch_size=bs, convert_to_numpy=True,
                                       show_progress_bar=False))  # fmt: skip

    ours.encode_documents(texts[:64])  # warm-up: kernels, allocator
    for ref in refs.values():
        ref.encode(texts[:64], prompt=prompt, batch_size=32)
    timed = race({"ours": sync(lambda: ours.encode_documents(texts)),
                  **{f"{name}-{bs}": st_encode(ref, bs) for name, ref in refs.items() for bs in batch_sizes}},
                 rounds=rounds)  # fmt: skip
    ours_s, a = timed["ours"]
    n, ours_dps = len(texts), len(texts) / ours_s
    best = {name: best_of_sweep(timed, f"{name}-", batch_sizes, n) for name in refs}

    def entry(name: str) -> dict:
        b = best[name]
        return {"name": f"sentence-transformers SentenceTransformer.encode, {name} (our document prompt)",
                "version": version("sentence-transformers"), "dtype": name,
                "setting": f"{name}, batch_size={b['batch_size']}, the best of a sweep over {list(batch_sizes)} "
                           "(its default: 32)",
                "batch_size": b["batch_size"], "seconds": round(b["seconds"], 3), "docs_per_s": round(b["per_s"], 1),
                "sweep_docs_per_s": b["sweep"],
                # the same precision as ours: how far the two sets of vectors are apart
                "max_abs_diff_vs_ours": float(np.abs(np.asarray(a) - np.asarray(b["output"])).max())}  # fmt: skip

    same = dtype_name(ours.dtype)
    result = {
        "benchmark": "dense-encode",
        "dataset": str(dataset_dir),
        "model": model,
        "num_docs": n,
        "device": str(ours.device),
        "dtype": same,
        "threads": threads,
        "timing": f"fastest of {rounds} rounds, contenders in turn, after a warm-up; one device each",
        "versions": versions("torch", "transformers", "sentence-transformers"),
        "ours": {"name": "cascade DenseEncoder (length-sorted token-budget batches)", "version": version("cascade-search"),
                 "dtype": same, "batch_size": ours.batch_size, "max_tokens": ours.max_tokens,
                 "seconds": round(ours_s, 3), "docs_per_s": round(ours_dps, 1)},
        "baseline": entry("float32"),
        "baselines": {name: entry(name) for name in refs},
        "ratio": round(ours_dps / best["float32"]["per_s"], 3),
        "ratio_same_dtype": round(ours_dps / best[same]["per_s"], 3),
        "max_abs_diff": entry(same)["max_abs_diff_vs_ours"],
    }  # fmt: skip
    if ours.device.type == "cuda":
        name = torch.cuda.get_device_name(ours.device)
        peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
        flops = _forward_flops(ours, texts)
        result["gpu"] = name
        result["ours"]["tflops"] = round(flops / ours_s / 1e12, 2)
        for ref_name, ref_entry in result["baselines"].items():
            ref_entry["tflops"] = round(flops / best[ref_name]["seconds"] / 1e12, 2)
        if peak:
            result["ours"]["share_of_bf16_peak"] = round(flops / ours_s / peak, 4)
    else:
        result["ours"]["gflops"] = round(_forward_flops(ours, texts) / ours_s / 1e9, 1)
    if plot is not None:
        from cascade.eval.plots import line_chart

        series = {f"sentence-transformers encode, {name}": [(int(bs), v) for bs, v in best[name]["sweep"].items()]
                  for name in refs}  # fmt: skip
        series[f"cascade, {same} (token-budget batches)"] = [(bs, round(ours_dps, 1)) for bs in batch_sizes]
        result["plots"] = [str(line_chart(plot, series, "sentence-transformers batch size", "documents/s",
                                          f"{Path(model).name} encode, {n} docs, {result['device']}",
                                          logx=True))]  # fmt: skip
    return result


def _forward_flops(encoder, texts: list[str]) -> float:
    """Useful FLOPs of one forward pass over the texts (unpadded): 2 x weights x tokens in the
    linear layers plus 4 x layers x hidden x tokens^2 for attention."""
    model = encoder.model
    cfg = model.config
    embed = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    weights = sum(p.numel() for p in model.parameters()) - embed
    lengths = np.array([len(x) for x in encoder.tokenize(texts, encoder.config.document_prompt)], dtype=np.float64)
    return float(2 * weights * lengths.sum() + 4 * cfg.num_hidden_layers * cfg.hidden_size * (lengths**2).sum())


def search(dataset_dir: Path, device: str | None = None, k: int = 10, rounds: int = 5,
           indexes: tuple[str, ...] = ("hnsw", "ivf-sq8", "ivf-pq"), plot: Path | None = None, **_) -> dict:  # fmt: skip
    """``cascade bench dense-search``: approximate indexes against exact search (recall@10, queries/s).

    The embeddings are those of the ``dense`` preset's cached index (built on first use).
    """
    import time

    from cascade.eval.evaluate import dataset_index_set
    from cascade.retrieval.dense.retriever import DenseRetriever
    from cascade.retrieval.pipeline import RetrieverStage

    ds = load_dataset(dataset_dir, "test")
    flat = dataset_index_set(ds).retriever(RetrieverStage(retriever="dense"))
    flat.device = device
    queries = ds.queries
    qv = flat.encoder.encode_queries([q.text for q in queries])
    vectors = np.asarray(flat.embeddings)
    contenders, builds = {"exact": flat}, {}
    for name in indexes:
        t = time.perf_counter()
        contenders[name] = DenseRetriever.from_vectors(flat.config, flat.doc_ids, vectors, name, device=device)
        builds[name] = time.perf_counter() - t
    timed = race({n: (lambda r=r: r.search_vectors(queries, qv, k)) for n, r in contenders.items()}, rounds)
    exact_s, exact = timed["exact"]
    # parity of the reference itself: faiss Flat's top k against a numpy product, query by query
    top = np.argsort(-(np.asarray(qv, np.float32) @ vectors.astype(np.float32).T), axis=1, kind="stable")[:, :k]
    same = sum(set(e.doc_ids) == {flat.doc_ids[j] for j in row} for e, row in zip(exact, top, strict=True))
    out = {}
    for name in indexes:
        secs, got = timed[name]
        recall = np.mean([len(set(g.doc_ids) & set(e.doc_ids)) / len(e) for g, e in zip(got, exact, strict=True)])
        out[name] = {"index": contenders[name].factory, "build_s": round(builds[name], 3),
                     "queries_per_s": round(len(queries) / secs, 1), f"recall@{k}": round(float(recall), 4)}  # fmt: skip
    result = {
        "benchmark": "dense-search",
        "dataset": str(dataset_dir),
        "num_docs": flat.num_docs,
        "num_queries": len(queries),
        "dim": flat.dim,
        "timing": f"fastest of {rounds} rounds, contenders in turn; query embeddings computed once, untimed",
        "versions": versions("faiss-cpu", "numpy"),
        "ours": out["hnsw"] if "hnsw" in out else next(iter(out.values())),
        "indexes": out,
        "baseline": {"name": "exact inner product (faiss Flat)", "version": version("faiss-cpu"),
                     "setting": "IndexFlatIP over all embeddings, the whole query batch in one call",
                     "queries_per_s": round(len(queries) / exact_s, 1), "same_top_k_as_numpy": same},
        "ratio": round((out.get("hnsw") or next(iter(out.values())))["queries_per_s"] * exact_s / len(queries), 3),
    }  # fmt: skip
    if plot is not None:
        from cascade.eval.plots import line_chart

        series = {f"{name} ({m['index']})": [(m[f"recall@{k}"], m["queries_per_s"])] for name, m in out.items()}
        series["exact (faiss Flat)"] = [(1.0, result["baseline"]["queries_per_s"])]
        result["plots"] = [str(line_chart(plot, series, f"recall@{k} vs exact", "queries/s",
                                          f"dense ANN, {flat.num_docs:,} docs", logy=True, pareto=True))]  # fmt: skip
    return result

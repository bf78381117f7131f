"""``cascade bench rerank`` and ``cascade bench listwise``.

``rerank``: our cross-encoder against sentence-transformers' ``CrossEncoder.predict`` on the
same checkpoint and the same (query, document) pairs, one device each, the reference at the
best of a batch-size sweep: pairs/s of each and the largest score difference. With no hub here, the checkpoint is built locally: the real
all-MiniLM-L6-v2 encoder (an offline package) with a seeded random 1-label head, the size
of ``cross-encoder/ms-marco-MiniLM-L6-v2``. Pairs: SciFact test queries x their BM25 top
candidates (title + text), max length 256.

``listwise``: FIRST (one forward pass per window) against generation-based listwise
reranking on the same model, prompt and window: latency per window. Both are Cascade's code:
the reference is not an external tool. The model is a toy, a small random Llama built locally
over the MiniLM vocabulary, whose alphabetical identifiers are single tokens (the output names
its layers, width and parameters); on a GPU the race also runs a Llama-2-7B-size architecture
with random weights. Generation writes a full ``[A] > [B] > ...`` answer (no early stop).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cascade.eval.bench import best_of_sweep, race, version, versions
from cascade.eval.precision import bm25_candidates
from cascade.retrieval.errors import require
from cascade.retrieval.models import DEFAULT_DENSE_MODEL, resolve_device, resolve_model_path

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/cascade/bench").expanduser()


def build_minilm_cross_encoder(path: Path, seed: int = 0) -> Path:
    """MiniLM-L6 with a seeded random 1-label head, saved as a plain HF checkpoint (kept if present)."""
    torch = require("torch", "models")
    transformers = require("transformers", "models")
    if (path / "config.json").is_file():
        return path
    torch.manual_seed(seed)
    source = resolve_model_path(DEFAULT_DENSE_MODEL)
    model = transformers.BertForSequenceClassification.from_pretrained(source, num_labels=1).eval()
    model.save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


def build_tiny_causal_lm(path: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A random LlamaForCausalLM over the MiniLM vocabulary ([CLS] as BOS, [SEP] as EOS)."""
    torch = require("torch", "models")
    transformers = require("transformers", "models")
    if (path / "config.json").is_file():
        return path
    torch.manual_seed(seed)
    tok = transformers.AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_DENSE_MODEL))
    config = transformers.LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).eval().save_pretrained(path)
    tok.model_max_length = config.max_position_embeddings  # the LM's context, not MiniLM's 512
    tok.save_pretrained(path)
    return path


#: sentence-transformers CrossEncoder batch sizes swept by ``rerank`` (its default is 32)
CE_BATCH_SIZES = (16, 32, 64, 128)


def run_rerank(dataset_dir: Path, device: str | None = None, num_queries: int = 16, depth: int = 10,
               max_length: int = 256, batch_size: int = 32, batch_sizes: list[int] | tuple[int, ...] = CE_BATCH_SIZES,
               dtype: str | None = None, repeat: int = 3, split: str = "test", cache_dir: str | None = None,
               chunk_size: int | None = None, model: str | None = None, plot: Path | None = None, **_) -> dict:  # fmt: skip
    """Cross-encoder pairs/s, ours vs sentence-transformers, and the largest score difference.

    Ours runs at ``dtype`` (default ``auto``: bf16 on a bf16-capable CPU or a GPU);
    sentence-transformers' ``CrossEncoder.predict`` runs at fp32 (its default: the headline
    ``ratio``) and at our precision (``ratio_same_dtype``), each at each of ``batch_sizes``,
    its best being its figure. ``batch_size`` is ours. ``model``: a local cross-encoder
    checkpoint (default: MiniLM-L6 with a seeded random head, see the module doc). ``plot``:
    pairs/s against the reference's batch size, ours as a line.
    """
    torch = require("torch", "models")
    st = require("sentence_transformers", "models")
    from cascade.rerank.cross_encoder import CrossEncoderReranker
    from cascade.retrieval.models import dtype_name

    from .dense import one_device, reference_dtypes

    dev = resolve_device(one_device(device))
    path = Path(model) if model else build_minilm_cross_encoder(Path(cache_dir or DEFAULT_CACHE) / "minilm-l6-ce")
    queries, cands = bm25_candidates(dataset_dir, num_queries, depth, split)
    firsts = [q.text for q, ds in zip(queries, cands, strict=True) for _ in ds]
    seconds = [d.contents for ds in cands for d in ds]

    ours = CrossEncoderReranker(str(path), device=str(dev), dtype=dtype, batch_size=batch_size, max_length=max_length,
                                chunk_size=chunk_size)  # fmt: skip
    same = dtype_name(ours.dtype)
    refs = {dtype_name(dt): st.CrossEncoder(str(path), device=str(dev), max_length=max_length, model_kwargs={"dtype": dt})
            for dt in reference_dtypes(ours.dtype)}  # fmt: skip
    pairs = list(zip(firsts, seconds, strict=True))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def ours_run():
        out = ours.score_pairs(firsts, seconds)
        sync()
        return out

    def ref_run(ref, bs):
        def go():
            out = ref.predict(pairs, batch_size=bs, show_progress_bar=False)
            sync()
            return out

        return go

    ours_run()  # warm-up: allocator, kernels, tokenizer caches
    for ref in refs.values():
        ref_run(ref, 32)()
    timings = race({"ours": ours_run, **{f"{name}-{bs}": ref_run(ref, bs) for name, ref in refs.items()
                                         for bs in batch_sizes}}, rounds=repeat)  # fmt: skip
    n = len(pairs)
    ours_s, ours_scores = timings["ours"]
    best = {name: best_of_sweep(timings, f"{name}-", batch_sizes, n) for name in refs}

    # the serving case: one query and its top 100 (as a pipeline's rerank stage sees it)
    (query,), (top,) = bm25_candidates(dataset_dir, 1, 100, split)
    one_q, one_d = [query.text] * len(top), [d.contents for d in top]
    one_pairs = list(zip(one_q, one_d, strict=True))
    single = race({
        "ours": lambda: (ours.score_pairs(one_q, one_d), sync()),
        **{name: (lambda r=ref, b=best[name]["batch_size"]: (r.predict(one_pairs, batch_size=b, show_progress_bar=False),
                                                               sync()))
           for name, ref in refs.items()},
    }, rounds=max(repeat, 3))  # fmt: skip

    def entry(name: str) -> dict:
        b = best[name]
        return {"name": f"sentence-transformers CrossEncoder.predict, {name}", "version": version("sentence-transformers"),
                "dtype": name,
                "setting": f"{name}, batch_size={b['batch_size']}, the best of a sweep over {list(batch_sizes)} "
                           "(its default: 32)",
                "pairs_per_s": round(b["per_s"], 1), "batch_size": b["batch_size"], "sweep_pairs_per_s": b["sweep"],
                "one_query_100_docs_ms": round(1000 * single[name][0], 1),
                "max_abs_score_diff_vs_ours": float(np.abs(np.asarray(ours_scores) - np.asarray(b["output"])).max())}  # fmt: skip

    result = {
        "benchmark": "rerank",
        "dataset": str(dataset_dir),
        "device": str(dev),
        "dtype": same,
        "threads": torch.get_num_threads(),
        "model": str(path),
        # the default checkpoint's head is not trained: its speed is a real MiniLM-L6 cross-encoder's
        "model_weights": "local checkpoint" if model else
        "all-MiniLM-L6-v2 encoder (real weights) with a seeded random 1-label head: not a trained cross-encoder",
        "pairs": n,
        "max_length": max_length,
        "timing": f"fastest of {repeat} rounds, contenders in turn, after a warm-up; one device each",
        "versions": versions("torch", "transformers", "sentence-transformers"),
        "ours": {"name": "cascade cross-encoder (pair tokens once per text, token-budget batches, tokenizing overlapped with the model)",
                 "version": version("cascade-search"), "dtype": same, "pairs_per_s": round(n / ours_s, 1),
                 "batch_size": batch_size},
        "baseline": entry("float32"),
        "baselines": {name: entry(name) for name in refs},
        "max_abs_score_diff": entry(same)["max_abs_score_diff_vs_ours"],
        "one_query_100_docs_ms": {"ours": round(1000 * single["ours"][0], 1),
                                  "baseline": round(1000 * single["float32"][0], 1)},
        "ratio": round(best["float32"]["seconds"] / ours_s, 3),
        "ratio_same_dtype": round(best[same]["seconds"] / ours_s, 3),
    }  # fmt: skip
    if plot is not None:
        from cascade.eval.plots import line_chart

        series = {f"sentence-transformers CrossEncoder.predict, {name}": [(int(bs), v) for bs, v in best[name]["sweep"].items()]
                  for name in refs}  # fmt: skip
        series[f"cascade, {same} (batch_size={batch_size}, token budget)"] = [(bs, round(n / ours_s, 1)) for bs in batch_sizes]
        result["plots"] = [str(line_chart(plot, series, "reference batch size", "pairs/s",
                                          f"cross-encoder {path.name}, {n} pairs, {dev}", logx=True))]  # fmt: skip
    return result


#: Llama-2-7B's shape (over the MiniLM vocabulary here), for the GPU latency of a real-size model
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32}  # fmt: skip


def _describe(model, note: str) -> dict:
    cfg = model.config
    return {"architecture": type(model).__name__, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
            "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size,
            "params": int(sum(p.numel() for p in model.parameters())), "weights": note}  # fmt: skip


def _race_windows(first, gen, queries, cands, dev, repeat: int) -> dict:
    """ms per window of FIRST and of generation, and how many outputs rerank the same documents."""
    torch = require("torch", "models")

    def timed(reranker):
        def go():
            out = reranker.rerank_batch(queries, cands)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        return go

    timings = race({"first": timed(first), "gen": timed(gen)}, rounds=repeat, warm=True)
    (first_s, a), (gen_s, b) = timings["first"], timings["gen"]
    windows = len(queries)  # depth == window: one window per query
    same = sum(sorted(x.doc_ids) == sorted(y.doc_ids) == sorted(d.id for d in c) for x, y, c in zip(a, b, cands, strict=True))
    return {"first_ms_per_window": round(1000 * first_s / windows, 2), "gen_ms_per_window": round(1000 * gen_s / windows, 2),
            "ratio": round(gen_s / first_s, 3), "same_documents": same}  # fmt: skip


def run_listwise(dataset_dir: Path, device: str | None = None, num_queries: int = 4, window: int = 20,
                 max_passage_words: int = 100, hidden: int = 256, layers: int = 4, dtype: str | None = None,
                 repeat: int = 2, split: str = "test", cache_dir: str | None = None, big: bool | None = None,
                 **_) -> dict:  # fmt: skip
    """Latency of one window: FIRST (one forward pass) vs generation (a full answer), on the
    same model, prompt and window. The model is a toy: a random Llama of ``hidden`` x
    ``layers`` over the MiniLM vocabulary (latency does not depend on the weights). On a GPU
    (``big`` defaults to True there) the same race also runs a Llama-2-7B-size architecture
    with random weights, built on the device in bf16."""
    torch = require("torch", "models")
    from cascade.rerank.listwise import FirstReranker, ListwiseReranker

    from .dense import one_device

    dev = resolve_device(one_device(device))
    path = build_tiny_causal_lm(Path(cache_dir or DEFAULT_CACHE) / f"llama-h{hidden}-l{layers}", hidden, layers)
    queries, cands = bm25_candidates(dataset_dir, num_queries, window, split)
    common = {"device": str(dev), "dtype": dtype, "window": window, "stride": window // 2, "depth": window,
              "identifiers": "alpha", "prompt": "rankzephyr", "max_passage_words": max_passage_words,
              "batch_size": 1, "show_progress": False}  # fmt: skip
    first = FirstReranker(str(path), **common)
    gen = ListwiseReranker(str(path), backend="hf", **common)
    answer_tokens = gen.backend.estimate_tokens(gen.prompt.answer_template(window)) + 2
    prompt_tokens = np.mean([gen.backend.estimate_tokens(gen.backend.render(m)) for m in
                             gen.window_messages([q.text for q in queries], cands)])  # fmt: skip
    toy = _race_windows(first, gen, queries, cands, dev, repeat)
    out = {
        "benchmark": "listwise",
        "dataset": str(dataset_dir),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "model": {**_describe(first.backend.model, "toy: random weights"), "tokenizer": "MiniLM (BERT WordPiece)"},
        "timing": f"fastest of {repeat} rounds, in turn, each after an untimed call",
        "versions": versions("torch", "transformers"),
        "windows": len(queries),
        "window": window,
        "prompt_tokens_mean": round(float(prompt_tokens), 1),
        "answer_tokens": answer_tokens,
        "ours": {"name": "FIRST (first-token identifier logits)", "version": version("cascade-search"),
                 "ms_per_window": toy["first_ms_per_window"]},
        "baseline": {"name": "generation-based listwise (Cascade's own HF generation path, same model, prompt, window)",
                     "version": version("transformers"),
                     "setting": f"greedy generate() of the full answer ({answer_tokens} tokens, no early stop), "
                                "batch 1, same toy model: not an external tool",
                     "ms_per_window": toy["gen_ms_per_window"]},
        "same_documents": toy["same_documents"],
        "ratio": toy["ratio"],
    }  # fmt: skip
    if big if big is not None else dev.type == "cuda":
        transformers = require("transformers", "models")
        config = transformers.LlamaConfig(**{**first.backend.model.config.to_dict(), **LLAMA_7B})
        with torch.device(dev):
            model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
        for reranker in (first, gen):  # same tokenizer and prompts, the 7B-size network
            reranker.backend.model, reranker.backend.dtype = model, torch.bfloat16
        out["model_7b"] = {**_describe(model, "random weights (latency does not depend on them)"), "dtype": "bf16",
                           **_race_windows(first, gen, queries, cands, dev, repeat)}  # fmt: skip
    return out

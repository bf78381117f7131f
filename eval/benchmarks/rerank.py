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

from cascade.eval.bench import race, version, versions
from cascade.eval.datasets import load_dataset
from cascade.retrieval.errors import require
from cascade.retrieval.models import DEFAULT_DENSE_MODEL, resolve_device, resolve_model_path
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.types import Document, Query

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


def _bm25_candidates(dataset_dir: Path, split: str, num_queries: int, depth: int) -> tuple[list[Query], list[list[Document]]]:
    ds = load_dataset(dataset_dir, split)
    docs = list(ds.corpus())
    by_id = {d.id: d for d in docs}
    queries = ds.queries[:num_queries]
    rankings = BM25Retriever.build(docs, show_progress=False).search(queries, k=depth)
    return queries, [[by_id[i] for i in r.doc_ids] for r in rankings]


#: sentence-transformers CrossEncoder batch sizes swept by ``rerank`` (its default is 32)
CE_BATCH_SIZES = (16, 32, 64, 128, 256)


def run_rerank(dataset_dir: Path, device: str | None = None, num_queries: int = 16, depth: int = 10,
               max_length: int = 256, batch_size: int = 32, batch_sizes: list[int] | tuple[int, ...] = CE_BATCH_SIZES,
               dtype: str | None = None, repeat: int = 3, split: str = "test", cache_dir: str | None = None,
               chunk_size: int | None = None, model: str | None = None, plot: Path | None = None, **_) -> dict:  # fmt: skip
    """Cross-encoder pairs/s, ours vs sentence-transformers, and the largest score difference.

    sentence-transformers' ``CrossEncoder.predict`` runs at each of ``batch_sizes``; its best
    is the baseline. ``batch_size`` is ours. ``model``: a local cross-encoder checkpoint
    (default: MiniLM-L6 with a seeded random head, see the module doc). ``plot``: pairs/s
    against the reference's batch size, ours as a line.
    """
    torch = require("torch", "models")
    st = require("sentence_transformers", "models")
    from cascade.rerank.cross_encoder import CrossEncoderReranker

    from .dense import one_device

    dev = resolve_device(one_device(device))
    dtype = dtype or ("fp16" if dev.type == "cuda" else "fp32")
    path = Path(model) if model else build_minilm_cross_encoder(Path(cache_dir or DEFAULT_CACHE) / "minilm-l6-ce")
    queries, cands = _bm25_candidates(dataset_dir, split, num_queries, depth)
    firsts = [q.text for q, ds in zip(queries, cands, strict=True) for _ in ds]
    seconds = [d.contents for ds in cands for d in ds]

    ours = CrossEncoderReranker(str(path), device=str(dev), dtype=dtype, batch_size=batch_size, max_length=max_length,
                                chunk_size=chunk_size)  # fmt: skip
    ref = st.CrossEncoder(str(path), device=str(dev), max_length=max_length, model_kwargs={"dtype": ours.dtype})
    pairs = list(zip(firsts, seconds, strict=True))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def ours_run():
        out = ours.score_pairs(firsts, seconds)
        sync()
        return out

    def ref_run(bs):
        def go():
            out = ref.predict(pairs, batch_size=bs, show_progress_bar=False)
            sync()
            return out

        return go

    ours_run(), ref_run(32)()  # warm-up: allocator, kernels, tokenizer caches
    timings = race({"ours": ours_run, **{f"ref-{bs}": ref_run(bs) for bs in batch_sizes}}, rounds=repeat)
    n = len(pairs)
    sweep = {bs: n / timings[f"ref-{bs}"][0] for bs in batch_sizes}
    best = max(sweep, key=sweep.get)
    (ours_s, ours_scores), (ref_s, ref_scores) = timings["ours"], timings[f"ref-{best}"]

    # the serving case: one query and its top 100 (as a pipeline's rerank stage sees it)
    (query,), (top,) = _bm25_candidates(dataset_dir, split, 1, 100)
    one_q, one_d = [query.text] * len(top), [d.contents for d in top]
    single = race({
        "ours": lambda: (ours.score_pairs(one_q, one_d), sync()),
        "ref": lambda: (ref.predict(list(zip(one_q, one_d, strict=True)), batch_size=best, show_progress_bar=False), sync()),
    }, rounds=max(repeat, 3))  # fmt: skip
    result = {
        "benchmark": "rerank",
        "dataset": str(dataset_dir),
        "device": str(dev),
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "model": str(path),
        "pairs": n,
        "max_length": max_length,
        "timing": f"fastest of {repeat} rounds, contenders in turn, after a warm-up; one device each",
        "versions": versions("torch", "transformers", "sentence-transformers"),
        "ours": {"name": "cascade cross-encoder (pair tokens once per text, token-budget batches, tokenizing overlapped with the model)",
                 "version": version("cascade-search"), "pairs_per_s": round(n / ours_s, 1), "batch_size": batch_size},
        "baseline": {"name": "sentence-transformers CrossEncoder.predict", "version": version("sentence-transformers"),
                     "setting": f"batch_size={best}, the best of a sweep over {list(batch_sizes)} (its default: 32)",
                     "pairs_per_s": round(n / ref_s, 1), "batch_size": best,
                     "sweep_pairs_per_s": {str(bs): round(v, 1) for bs, v in sweep.items()}},
        "max_abs_score_diff": float(np.abs(np.asarray(ours_scores) - np.asarray(ref_scores)).max()),
        "one_query_100_docs_ms": {"ours": round(1000 * single["ours"][0], 1), "baseline": round(1000 * single["ref"][0], 1)},
        "ratio": round(ref_s / ours_s, 3),
    }  # fmt: skip
    if plot is not None:
        from cascade.eval.plots import line_chart

        series = {"sentence-transformers CrossEncoder.predict": [(bs, round(v, 1)) for bs, v in sweep.items()],
                  f"cascade (batch_size={batch_size}, token budget)": [(bs, round(n / ours_s, 1)) for bs in batch_sizes]}  # fmt: skip
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
    queries, cands = _bm25_candidates(dataset_dir, split, num_queries, window)
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

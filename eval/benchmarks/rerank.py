"""``cascade bench rerank`` and ``cascade bench listwise``.

``rerank``: our cross-encoder against sentence-transformers' ``CrossEncoder.predict`` on the
same checkpoint and the same (query, document) pairs: pairs/s of each and the largest
score difference. With no hub here, the checkpoint is built locally: the real
all-MiniLM-L6-v2 encoder (an offline package) with a seeded random 1-label head, the size
of ``cross-encoder/ms-marco-MiniLM-L6-v2``. Pairs: SciFact test queries x their BM25 top
candidates (title + text), max length 256.

``listwise``: FIRST (one forward pass per window) against generation-based listwise
reranking on the same model, prompt and window: latency per window. The model is a small
random Llama built locally over the MiniLM vocabulary, whose alphabetical identifiers are
single tokens; generation writes a full ``[A] > [B] > ...`` answer (no early stop).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cascade.eval.bench import race
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


def run_rerank(dataset_dir: Path, device: str | None = None, num_queries: int = 16, depth: int = 10,
               max_length: int = 256, batch_size: int = 32, dtype: str | None = None, repeat: int = 3,
               split: str = "test", cache_dir: str | None = None, chunk_size: int | None = None, **_) -> dict:  # fmt: skip
    """Cross-encoder pairs/s, ours vs sentence-transformers, and the largest score difference."""
    torch = require("torch", "models")
    st = require("sentence_transformers", "models")
    from cascade.rerank.cross_encoder import CrossEncoderReranker

    dev = resolve_device(device)
    dtype = dtype or ("fp16" if dev.type == "cuda" else "fp32")
    path = build_minilm_cross_encoder(Path(cache_dir or DEFAULT_CACHE) / "minilm-l6-ce")
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

    def ref_run():
        out = ref.predict(pairs, batch_size=batch_size, show_progress_bar=False)
        sync()
        return out

    ours_run(), ref_run()  # warm-up: allocator, kernels, tokenizer caches
    timings = race({"ours": ours_run, "ref": ref_run}, rounds=repeat)
    (ours_s, ours_scores), (ref_s, ref_scores) = timings["ours"], timings["ref"]
    n = len(pairs)

    # the serving case: one query and its top 100 (as a pipeline's rerank stage sees it)
    (query,), (top,) = _bm25_candidates(dataset_dir, split, 1, 100)
    one_q, one_d = [query.text] * len(top), [d.contents for d in top]
    single = race({
        "ours": lambda: (ours.score_pairs(one_q, one_d), sync()),
        "ref": lambda: (ref.predict(list(zip(one_q, one_d, strict=True)), batch_size=batch_size, show_progress_bar=False), sync()),
    }, rounds=max(repeat, 3))  # fmt: skip
    return {
        "benchmark": "rerank",
        "dataset": str(dataset_dir),
        "device": str(dev),
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "pairs": n,
        "max_length": max_length,
        "ours": {"name": "cascade cross-encoder (pair tokens once per text, token-budget batches, tokenizing overlapped with the model)", "pairs_per_s": round(n / ours_s, 1),
                 "batch_size": batch_size},
        "baseline": {"name": f"sentence-transformers {st.__version__} CrossEncoder.predict",
                     "pairs_per_s": round(n / ref_s, 1), "batch_size": batch_size},
        "max_abs_score_diff": float(np.abs(np.asarray(ours_scores) - np.asarray(ref_scores)).max()),
        "one_query_100_docs_ms": {"ours": round(1000 * single["ours"][0], 1), "baseline": round(1000 * single["ref"][0], 1)},
        "ratio": round(ref_s / ours_s, 3),
    }  # fmt: skip


def run_listwise(dataset_dir: Path, device: str | None = None, num_queries: int = 4, window: int = 20,
                 max_passage_words: int = 100, hidden: int = 256, layers: int = 4, dtype: str | None = None,
                 repeat: int = 2, split: str = "test", cache_dir: str | None = None, **_) -> dict:  # fmt: skip
    """Latency of one window: FIRST (one forward pass) vs generation (a full answer)."""
    torch = require("torch", "models")
    from cascade.rerank.listwise import FirstReranker, ListwiseReranker

    dev = resolve_device(device)
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

    def timed(reranker):
        def go():
            out = reranker.rerank_batch(queries, cands)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        return go

    timed(first)(), timed(gen)()  # warm-up
    timings = race({"first": timed(first), "gen": timed(gen)}, rounds=repeat)
    first_s, gen_s = timings["first"][0], timings["gen"][0]
    windows = len(queries)  # depth == window: one window per query
    return {
        "benchmark": "listwise",
        "dataset": str(dataset_dir),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "model": f"random Llama hidden={hidden} layers={layers}, MiniLM vocabulary",
        "windows": windows,
        "window": window,
        "prompt_tokens_mean": round(float(prompt_tokens), 1),
        "answer_tokens": answer_tokens,
        "ours": {"name": "FIRST (first-token identifier logits)", "ms_per_window": round(1000 * first_s / windows, 2)},
        "baseline": {"name": "generation-based listwise (same model, prompt, window)",
                     "ms_per_window": round(1000 * gen_s / windows, 2)},
        "ratio": round(gen_s / first_s, 3),
    }  # fmt: skip

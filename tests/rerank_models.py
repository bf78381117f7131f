"""Tiny models for the reranker tests, built from configs with seeded random weights.

They share the real all-MiniLM-L6-v2 tokenizer (an offline package), so tokenization is
realistic while the models stay a few MB and load in well under a second.
"""

from __future__ import annotations

from pathlib import Path

from cascade.eval.benchmarks.rerank import build_minilm_cross_encoder as minilm_cross_encoder  # noqa: F401
from cascade.eval.benchmarks.rerank import build_tiny_causal_lm as tiny_llama  # noqa: F401
from cascade.retrieval.models import resolve_model_path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(MINILM))


def tiny_bert_cross_encoder(path: Path, activation: str | None = None, seed: int = 0, num_labels: int = 1) -> Path:
    """A 2-layer BertForSequenceClassification with one label, saved with the MiniLM tokenizer.

    ``activation`` is stored the way sentence-transformers >= 4 saves it (a dotted torch path).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=num_labels,
                        initializer_range=0.3)  # fmt: skip
    if activation is not None:
        config.sentence_transformers = {"activation_fn": activation}
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path)
    minilm_tokenizer().save_pretrained(path)
    return path


def tiny_t5(path: Path, seed: int = 0) -> Path:
    """A 2-layer T5ForConditionalGeneration over the MiniLM vocabulary."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    tok = minilm_tokenizer()
    config = T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
                      decoder_start_token_id=tok.pad_token_id)  # fmt: skip
    T5ForConditionalGeneration(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path

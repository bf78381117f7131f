"""Tiny models for the dense tests, built once per session from configs with random weights."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from cascade.retrieval.models import resolve_model_path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

TEXTS = [
    "Stem cells differentiate into many cell types.",
    "A short one.",
    "Vitamin D deficiency is associated with an increased risk of fractures in older adults, "
    "according to several cohort studies and randomized trials.",
    "",
    "Protein folding is guided by hydrophobic interactions and hydrogen bonds",
    "The quick brown fox jumps over the lazy dog " * 12,
    "COVID-19 vaccines reduce hospitalization.",
    "Insulin resistance precedes type 2 diabetes.",
]


@functools.cache
def tiny_bert_dir() -> Path:
    """A 2-layer BERT (hidden 32) with random weights and the MiniLM tokenizer: a plain HF dir."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp(prefix="tiny-bert-"))
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    BertModel(config).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model_path(MINILM)).save_pretrained(path)
    return path


@functools.cache
def tiny_st_dir() -> Path:
    """The tiny BERT as a sentence-transformers dir: CLS pooling, normalize, length 24, E5 prompts."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="tiny-st-"))
    shutil.copytree(tiny_bert_dir(), path, dirs_exist_ok=True)
    (path / "1_Pooling").mkdir()
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24, "do_lower_case": False}))
    (path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None})
    )
    return path


@functools.cache
def tiny_decoder_dir(family: str = "llama", adds_eos: bool = False, max_positions: int = 64) -> Path:
    """A 2-layer Llama- or Qwen2-shaped decoder (hidden 32, random weights) with a byte-level BPE
    tokenizer trained here, padding on the left; ``adds_eos``: the tokenizer ends every
    sequence with ``</s>`` itself (as E5-Mistral's does), else it only starts with ``<s>``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(TEXTS * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>" if adds_eos else "<s> $A", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="left", model_max_length=max_positions)  # fmt: skip
    shape = dict(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                 bos_token_id=1, eos_token_id=2, pad_token_id=3, initializer_range=0.2)  # fmt: skip
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaModel), "qwen2": (Qwen2Config, Qwen2Model)}[family]
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp(prefix=f"tiny-{family}-"))
    model_cls(config_cls(**shape)).eval().save_pretrained(path)
    fast.save_pretrained(path)
    return path

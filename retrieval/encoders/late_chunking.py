"""Chunk embeddings for long documents: late chunking, or naive chunking as the baseline.

Both split a document's tokens into the same windows of ``max_tokens`` tokens overlapping
by ``overlap``. Naive chunking encodes each window's text on its own. Late chunking (Günther
et al., 2024) runs the model once over the whole document, so every token state has seen
the full context, then mean-pools the token states inside each window. A document longer
than the model's maximum length is run in consecutive macro windows that each carry the
special tokens and the document prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from cascade.retrieval.chunking import ChunkConfig
from cascade.retrieval.errors import InvalidInput

from .dense import DenseEncoder

ChunkingMethod = Literal["late", "naive"]


class ChunkSpec(ChunkConfig):
    """How documents are cut for chunk embeddings: a method, and the windows of
    :class:`ChunkConfig` counted in model tokens."""

    method: ChunkingMethod = "late"


def token_spans(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` over ``n_tokens`` tokens; at least one, even for an empty text.

    Example:
        >>> token_spans(10, 4, 1)
        [(0, 4), (3, 7), (6, 10)]
    """
    spans, start, step = [], 0, size - overlap
    while True:
        end = min(start + size, n_tokens)
        spans.append((start, end))
        if end >= n_tokens:
            return spans
        start += step


def chunk_embeddings(
    encoder: DenseEncoder, texts: Sequence[str], spec: ChunkSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Encode documents as chunks.

    Returns:
        ``(vectors, counts)``: one row per chunk, in document order, and the number of
        chunks of each document.
    """
    prompt = encoder.config.document_prompt
    full = [prompt + t for t in texts]
    if encoder.config.do_lower_case:
        full = [t.lower() for t in full]
    enc = encoder.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    # tokens starting inside the prompt belong to the prompt, the rest to the document
    prompt_ids, content_ids, content_offsets = [], [], []
    for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        split = next((i for i, (a, _) in enumerate(offsets) if a >= len(prompt)), len(ids))
        prompt_ids.append(ids[:split])
        content_ids.append(ids[split:])
        content_offsets.append(offsets[split:])
    spans = [token_spans(len(ids), spec.max_tokens, spec.overlap) for ids in content_ids]
    counts = np.array([len(s) for s in spans], dtype=np.int64)
    if spec.method == "naive":
        chunk_texts = [
            _span_text(text, offsets, prompt, a, b)
            for text, offsets, doc_spans in zip(full, content_offsets, spans, strict=True)
            for a, b in doc_spans
        ]
        return encoder.encode(chunk_texts, prompt), counts
    return _late(encoder, prompt_ids, content_ids, spans), counts


def _span_text(text: str, offsets: Sequence[tuple[int, int]], prompt: str, a: int, b: int) -> str:
    if not offsets:
        return text[len(prompt) :]
    return text[offsets[a][0] : offsets[b - 1][1]]


def _late(
    encoder: DenseEncoder,
    prompt_ids: list[list[int]],
    content_ids: list[list[int]],
    spans: list[list[tuple[int, int]]],
) -> np.ndarray:
    pre, post = encoder.prefix_ids, encoder.suffix_ids
    # macro windows: as much of the document as fits in one sequence, prompt included
    windows, owners = [], []
    for doc, (p_ids, c_ids) in enumerate(zip(prompt_ids, content_ids, strict=True)):
        room = encoder.max_length - len(pre) - len(post) - len(p_ids)
        if room < 1:
            raise InvalidInput(f"the document prompt leaves no room in max_length={encoder.max_length}")
        for start in range(0, max(len(c_ids), 1), room):
            windows.append(pre + p_ids + c_ids[start : start + room] + post)
            owners.append(doc)
    states = encoder.token_states(windows)
    out, w = [], 0
    for doc, p_ids in enumerate(prompt_ids):
        skip = len(pre) + len(p_ids)
        parts = []
        while w < len(owners) and owners[w] == doc:
            parts.append(states[w][skip : len(states[w]) - len(post)])
            w += 1
        tokens = np.concatenate(parts)
        for a, b in spans[doc]:
            # an empty document has no content token: pool the whole (prompt + specials) sequence
            out.append(tokens[a:b].mean(0) if b > a else states[w - 1].mean(0))
    return encoder.postprocess(np.stack(out))

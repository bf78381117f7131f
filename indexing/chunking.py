"""Passage chunking: windows of at most ``max_tokens`` tokens, overlapping by about
``overlap`` tokens, cut at sentence ends whenever a sentence fits.

Each chunk keeps its parent id and character span, so a RAG answer can cite the exact
place in the original document. The windows are a :class:`~cascade.retrieval.chunking.ChunkConfig`
counted in whitespace words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from cascade.retrieval.chunking import ChunkConfig
from cascade.retrieval.types import Document

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n")
_WORD = re.compile(r"\S+")
DEFAULT_CHUNKING = ChunkConfig()


def _sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of sentences (a sentence ends at . ! ? before a capital, or a blank line)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _units(text: str, max_tokens: int) -> list[list[tuple[int, int]]]:
    """Sentences as lists of word spans; a sentence longer than a window is split."""
    units = []
    for s, e in _sentences(text):
        words = [(s + m.start(), s + m.end()) for m in _WORD.finditer(text[s:e])]
        for i in range(0, len(words), max_tokens):
            units.append(words[i : i + max_tokens])
    return units


def chunk_text(text: str, config: ChunkConfig = DEFAULT_CHUNKING) -> list[tuple[int, int]]:
    """Character spans of the chunks of ``text`` (whitespace words count as tokens)."""
    units = _units(text, config.max_tokens)
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        size, j = 0, i
        while j < len(units) and size + len(units[j]) <= config.max_tokens:
            size += len(units[j])
            j += 1
        chunks.append((units[i][0][0], units[j - 1][-1][1]))
        if j >= len(units):
            break
        # step back over whole sentences worth at most `overlap` tokens, as long as the next
        # window still reaches new text (unit j)
        back, k = 0, j
        while k - 1 > i and back + len(units[k - 1]) <= min(config.overlap, config.max_tokens - len(units[j])):
            back += len(units[k - 1])
            k -= 1
        i = k
    return chunks


def chunk_documents(docs: Iterable[Document], config: ChunkConfig = DEFAULT_CHUNKING) -> Iterator[Document]:
    """Split each document into chunks with ids ``{id}#{n}``; short documents stay whole
    (one chunk, same id pattern). Metadata carries ``parent_id``, ``start`` and ``end``."""
    for doc in docs:
        for n, (start, end) in enumerate(chunk_text(doc.text, config) or [(0, len(doc.text))]):
            meta = {**doc.metadata, "parent_id": doc.id, "start": start, "end": end}
            yield Document(f"{doc.id}#{n}", doc.text[start:end], doc.title, meta)

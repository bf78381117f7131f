"""Token ids of many texts without special tokens, as fast as the Rust tokenizer allows.

A reranker on a GPU waits on its tokenizer: for a MiniLM cross-encoder, tokenizing SciFact
abstracts takes longer than the model's forward pass. What makes it cheaper here:

- the Rust tokenizer's batch call without offsets (``encode_batch_fast``, all cores), on a
  copy of the backend whose truncation and padding are off;
- for BERT-style tokenizers (``BertNormalizer``), normalizing in Python: the normalizer maps
  each character on its own, so printable ASCII is left as is (lowercased), and every other
  character is replaced by what the Rust normalizer makes of it alone, asked once per
  character and remembered. The Rust normalizer also tracks an alignment per character, a
  large share of its time on English abstracts, which ids do not need. Texts where an added token (``[SEP]``...) could match go
  the full way, since added tokens are matched before normalization;
- with numba, the normalized texts skip the Rust tokenizer too: BERT's pre-tokenizer and
  WordPiece run compiled over all of them at once (:mod:`rerank.wordpiece`), and the ids land
  in one int64 pool instead of a Python list per text, with the same ids as the Rust
  tokenizer for every text.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .wordpiece import WordPieceKernel

#: ASCII control characters BertNormalizer's clean_text deletes (tab, newline, return become spaces).
_ASCII_CONTROL = [c for c in range(32) if c not in (9, 10, 13)] + [127]
#: What is not printable ASCII: the characters a translation table may change.
_NOT_PLAIN = re.compile(r"[^\x20-\x7e]")


class _Unmapped(Exception):
    """A character :class:`TextIds` cannot translate without the Rust normalizer."""


class TextIds:
    """``encode(texts)``: each text's token ids, no special tokens, no truncation.

    Args:
        backend: a ``tokenizers.Tokenizer`` (the ``backend_tokenizer`` of a fast HF tokenizer);
            it is copied, not changed.
    """

    def __init__(self, backend):
        from tokenizers import Tokenizer

        spec = backend.to_str()
        self.full = Tokenizer.from_str(spec)
        self.full.no_truncation()
        self.full.no_padding()
        self.plain, self.kernel, self._lowercase, self._added = None, None, False, None
        parsed = json.loads(spec)
        normalizer = parsed.get("normalizer") or {}
        if normalizer.get("type") == "BertNormalizer":
            self.plain = Tokenizer.from_str(self.full.to_str())
            self.plain.normalizer = None
            # what each character other than printable ASCII becomes; the rest are learned as met
            clean = normalizer.get("clean_text", True)
            self._replace = {chr(c): "" for c in _ASCII_CONTROL} | {"\t": " ", "\n": " ", "\r": " "} if clean else {}
            self._unmapped: set[str] = set()
            self._lowercase = normalizer.get("lowercase", True)
            added = [t.content for t in backend.get_added_tokens_decoder().values() if t.content]
            self._added = re.compile("|".join(map(re.escape, added))) if added else None
            self.kernel = WordPieceKernel.from_spec(parsed)

    def _normalized(self, text: str) -> str | None:
        """What BertNormalizer makes of a text, with words spaced as BertPreTokenizer splits
        them; ``None`` when the text must go through the Rust tokenizer."""
        if text.isascii() and text.isprintable():
            out = text
        elif text.isascii() or self.kernel is not None:
            # a regex that stops at the few characters to change: str.translate would look
            # every character up in a dict
            try:
                out = _NOT_PLAIN.sub(self._replacement, text)
            except _Unmapped:
                return None
        else:
            return None
        if self._lowercase:
            out = out.lower()
        if self._added is not None and (self._added.search(text) or self._added.search(out)):
            return None
        return out

    def _replacement(self, match: re.Match) -> str:
        """What a character other than printable ASCII becomes, learned when first met.

        BertNormalizer maps each character on its own (clean, pad CJK, NFD without
        nonspacing marks, lowercase), so the Rust normalizer, asked once per character, gives
        the translation; a character the pre-tokenizer splits on becomes spaces around it, so
        the kernel's ASCII word splitting is enough. The one context-dependent step, NFD's
        reordering of combining marks, only matters for marks that survive accent stripping.

        Raises:
            _Unmapped: the character has no translation; the text takes the Rust tokenizer.
        """
        char = match[0]
        entry = self._replace.get(char)
        if entry is None:
            entry = None if char in self._unmapped else self._translation(char)
            if entry is None:
                self._unmapped.add(char)
                raise _Unmapped
            self._replace[char] = entry
        return entry

    def _translation(self, char: str) -> str | None:
        if unicodedata.combining(char) and unicodedata.category(char) != "Mn":
            return None
        try:
            normalized = self.full.normalizer.normalize_str(char)
        except Exception:  # noqa: BLE001 - a lone surrogate, say: the Rust path decides
            return None
        parts = []
        for c in normalized:
            words = len(self.full.pre_tokenizer.pre_tokenize_str(f"a{c}a"))
            parts.append(" " if words == 2 else f" {c} " if words == 3 else c)  # 2: whitespace, 3: punctuation
        return "".join(parts)

    def encode(self, texts: Sequence[str]) -> Tokenized:
        """Token ids of each text, as the backend's ``encode(text, add_special_tokens=False)``."""
        if self.plain is None:
            return Tokenized.of(self._rust(self.full, texts))
        normalized = [self._normalized(t) for t in texts]
        slow = [i for i, n in enumerate(normalized) if n is None]
        # the texts that need the Rust tokenizer go through the fast path as empty texts, and
        # their ids are put in afterwards
        quick = self._fast([n if n is not None else "" for n in normalized])
        if not slow:
            return quick
        rust = Tokenized.of(self._rust(self.full, [texts[i] for i in slow]))
        return quick.replace(np.asarray(slow, dtype=np.int64), rust)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` as lists."""
        return self.encode(texts).ids()

    def _fast(self, normalized: list[str]) -> Tokenized:
        if self.kernel is not None:
            return Tokenized(*self.kernel.encode(normalized))
        return Tokenized.of(self._rust(self.plain, normalized))

    @staticmethod
    def _rust(tokenizer, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]


@dataclass
class Tokenized:
    """Token ids of several texts in one flat pool: text ``i`` is ``pool[starts[i]:][:lengths[i]]``."""

    pool: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, ids: Sequence[Sequence[int]]) -> Tokenized:
        pool, lengths = flatten(ids)
        return cls(pool, np.cumsum(lengths) - lengths, lengths)

    def ids(self) -> list[list[int]]:
        return [self.pool[s : s + n].tolist() for s, n in zip(self.starts, self.lengths, strict=True)]

    def replace(self, rows: np.ndarray, other: Tokenized) -> Tokenized:
        """These texts' ids taken from ``other`` (one text each, in ``rows`` order)."""
        starts, lengths = self.starts.copy(), self.lengths.copy()
        starts[rows], lengths[rows] = other.starts + len(self.pool), other.lengths
        return Tokenized(np.concatenate([self.pool, other.pool]), starts, lengths)


def distinct(texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Each text's position among the distinct texts, and the distinct texts in first-seen order."""
    slot: dict[str, int] = {}
    index = [slot.setdefault(t, len(slot)) for t in texts]
    return np.asarray(index, dtype=np.int64), list(slot)


def flatten(ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The ids of all texts in one int64 array, and each text's length."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths

"""Fast (query, document) tokenization for cross-encoders, identical to the HF pair call.

``tokenizer(queries, docs, truncation="longest_first", max_length=L)`` spends most of a GPU
reranker's time: every pair re-tokenizes its query, every document is tokenized to its end
although at most ``L`` tokens survive, and each encoding is converted to Python dicts.
:class:`PairEncoder` gives the same token ids and type ids with less work:

- each distinct query and document is tokenized once, without special tokens, by the Rust
  tokenizer's batch call (all cores, no offsets), or for BERT tokenizers by a compiled
  WordPiece on text normalized in Python (:mod:`rerank.text_ids`);
- a long document is tokenized only up to a space past ``chars_per_token * L`` characters;
  when that prefix holds too few tokens to decide the truncation it is tokenized whole again,
  so the cut never changes a kept token;
- truncation is the tokenizer library's ``longest_first`` rule on lengths, and the special
  tokens come from the tokenizer's own pair template, read once by probing it;
- no pair is assembled in Python: each distinct text's ids go once into a flat pool, a pair
  is five (start, count) segments of it, and a padded batch is one numpy gather.

Tokenizers this cannot mirror (slow tokenizers, templates it cannot read) go through the plain
HF call, so the result is the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cascade.retrieval.errors import InvalidInput

from .text_ids import TextIds, Tokenized, distinct, flatten

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts special tokens around a pair: ``prefix A middle B suffix``."""

    ids: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    types: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    a_type: int
    b_type: int

    @property
    def num_special(self) -> int:
        return sum(len(part) for part in self.ids)

    def assemble(self, a: Sequence[int], b: Sequence[int]) -> tuple[list[int], list[int]]:
        (pre, mid, suf), (tpre, tmid, tsuf) = self.ids, self.types
        ids = [*pre, *a, *mid, *b, *suf]
        types = [*tpre, *([self.a_type] * len(a)), *tmid, *([self.b_type] * len(b)), *tsuf]
        return ids, types

    @classmethod
    def probe(cls, backend) -> PairTemplate | None:
        """Read the template by post-processing two known encodings; ``None`` if it is not
        the plain ``prefix A middle B suffix`` shape (checked on a second, longer probe)."""
        found = None
        for a_text, b_text in (("hello", "world"), ("hello there friend", "world of words here")):
            a = backend.encode(a_text, add_special_tokens=False)
            b = backend.encode(b_text, add_special_tokens=False)
            full = backend.post_process(a, b, True)
            ids, types = list(full.ids), list(full.type_ids)
            template = found or _split_template(ids, types, list(a.ids), list(b.ids))
            if template is None or template.assemble(a.ids, b.ids) != (ids, types):
                return None
            found = template
        return found


def _split_template(ids: list[int], types: list[int], a: list[int], b: list[int]) -> PairTemplate | None:
    for i in range(len(ids) - len(a) + 1):
        if ids[i : i + len(a)] != a:
            continue
        for j in range(i + len(a), len(ids) - len(b) + 1):
            if ids[j : j + len(b)] == b:
                seg_a, seg_b = set(types[i : i + len(a)]), set(types[j : j + len(b)])
                if len(seg_a) != 1 or len(seg_b) != 1:
                    return None
                cuts = ((0, i), (i + len(a), j), (j + len(b), len(ids)))
                return PairTemplate(
                    ids=tuple(tuple(ids[s:e]) for s, e in cuts),
                    types=tuple(tuple(types[s:e]) for s, e in cuts),
                    a_type=seg_a.pop(),
                    b_type=seg_b.pop(),
                )
    return None


def longest_first(len_a, len_b, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens kept of each side under the tokenizers library's ``longest_first`` truncation.

    The shorter side keeps what it has when the longer one can absorb the cut; when both are
    longer than half the budget, the shorter keeps ``budget // 2`` and the longer the rest.
    Lengths may be ints or arrays (one rule for every pair at once).
    """
    a, b = np.asarray(len_a, dtype=np.int64), np.asarray(len_b, dtype=np.int64)
    short = np.minimum(a, b)
    kept_long = np.where(short > budget, short, np.maximum(short, budget - short))
    both_cut = short + kept_long > budget
    kept_short = np.where(both_cut, budget // 2, short)
    kept_long = np.where(both_cut, budget // 2 + budget % 2, kept_long)
    fits, a_longer = a + b <= budget, a > b
    return (np.where(fits, a, np.where(a_longer, kept_long, kept_short)),
            np.where(fits, b, np.where(a_longer, kept_short, kept_long)))  # fmt: skip


@dataclass
class PairTokens:
    """Each pair's row as segments of one flat token pool, so a batch is one gather.

    Row ``i`` is its segments end to end: ``counts[i, s]`` tokens from ``pool[starts[i, s]:]``.
    The pair encoder puts the template's special tokens and each distinct text's ids in the
    pool once; rows point into it and never copy them.

    Attributes:
        pool: token ids, int64.
        pool_types: the type id of each pool token; ``None`` when the model takes none.
        starts, counts: ``(pairs, segments)`` int64.
    """

    pool: np.ndarray
    pool_types: np.ndarray | None
    starts: np.ndarray
    counts: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.counts.sum(axis=1)

    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the tokens of these rows end to end: where each sits in the pool, where it goes
        in a ``rows x longest`` matrix (flat index), and each row's length."""
        counts = self.counts[rows]
        lengths = counts.sum(axis=1)
        counts, total = counts.ravel(), int(lengths.sum())
        # the ranges [start, start + count) of every segment, end to end, without a loop
        src = np.repeat(self.starts[rows].ravel() - (np.cumsum(counts) - counts), counts) + np.arange(total)
        width = int(lengths.max(initial=0))
        dest = np.repeat(np.arange(len(lengths)) * width - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
        return src, dest, lengths

    def batch(self, rows: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` (and ``token_type_ids``) of these rows, right-padded."""
        src, dest, lengths = self._gather(np.asarray(rows))
        shape = (len(lengths), int(lengths.max(initial=0)))
        ids = np.full(shape, pad_id, dtype=np.int64)
        ids.reshape(-1)[dest] = self.pool[src]
        out = {"input_ids": ids, "attention_mask": (np.arange(shape[1]) < lengths[:, None]).astype(np.int64)}
        if self.pool_types is not None:
            types = np.zeros(shape, dtype=np.int64)
            types.reshape(-1)[dest] = self.pool_types[src]
            out["token_type_ids"] = types
        return out

    def ids(self) -> list[list[int]]:
        """Each pair's token ids, in input order."""
        if not len(self.counts):
            return []
        src, _, lengths = self._gather(np.arange(len(self.counts)))
        return [row.tolist() for row in np.split(self.pool[src], np.cumsum(lengths)[:-1])]


class PairEncoder:
    """Tokenizes (first, second) text pairs as the HF tokenizer's pair call does.

    Args:
        tokenizer: a Hugging Face tokenizer.
        max_length: tokens per pair, special tokens included.
        chars_per_token: where long seconds are cut before tokenizing, in characters per
            token they can keep; a cut that turns out too short is redone on the whole text.
        with_types: return token type ids too.
    """

    def __init__(self, tokenizer, max_length: int, chars_per_token: float = 5.0, with_types: bool = True):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.with_types = with_types
        self.chars_per_token = chars_per_token
        self.right = getattr(tokenizer, "truncation_side", "right") == "right"
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self._texts = TextIds(backend) if backend is not None else None
        self.template = PairTemplate.probe(self._texts.full) if self._texts is not None else None
        if self.template is not None and self.template.num_special >= max_length:
            raise InvalidInput(f"max_length {max_length} leaves no room beside {self.template.num_special} special tokens")
        if self.template is None:
            log.info("pair template of %s not readable: using the tokenizer's pair call", type(tokenizer).__name__)

    def encode(self, firsts: Sequence[str], seconds: Sequence[str]) -> PairTokens:
        """Token ids of each pair after ``longest_first`` truncation to ``max_length``.

        Raises:
            InvalidInput: ``firsts`` and ``seconds`` differ in length.
        """
        if len(firsts) != len(seconds):
            raise InvalidInput(f"{len(firsts)} first texts but {len(seconds)} second texts")
        if self.template is None:
            return self._hf_call(firsts, seconds)
        budget = self.max_length - self.template.num_special
        a_index, a_texts = distinct(firsts)
        a = self._texts.encode(a_texts)
        len_a = a.lengths[a_index]
        b_index, b_texts = distinct(seconds)
        b = self._seconds(b_texts, b_index, len_a, budget)
        len_b = b.lengths[b_index]
        keep_a, keep_b = longest_first(len_a, len_b, budget)

        # pool: prefix, middle and suffix specials, then the firsts' ids, then the seconds'
        (pre, mid, suf), (t_pre, t_mid, t_suf) = self.template.ids, self.template.types
        specials = len(pre) + len(mid) + len(suf)
        pool = np.concatenate([np.asarray(pre + mid + suf, dtype=np.int64), a.pool, b.pool])
        a_start, b_start = specials + a.starts[a_index], specials + len(a.pool) + b.starts[b_index]
        if not self.right:  # left truncation keeps each text's last tokens
            a_start, b_start = a_start + len_a - keep_a, b_start + len_b - keep_b

        def fixed(value: int) -> np.ndarray:
            return np.full(len(firsts), value, dtype=np.int64)

        starts = np.stack([fixed(0), a_start, fixed(len(pre)), b_start, fixed(len(pre) + len(mid))], axis=1)
        counts = np.stack([fixed(len(pre)), keep_a, fixed(len(mid)), keep_b, fixed(len(suf))], axis=1)
        types = None
        if self.with_types:
            types = np.concatenate([np.asarray(t_pre + t_mid + t_suf, dtype=np.int64),
                                    np.full(len(a.pool), self.template.a_type, dtype=np.int64),
                                    np.full(len(b.pool), self.template.b_type, dtype=np.int64)])  # fmt: skip
        return PairTokens(pool, types, starts, counts)

    def _seconds(self, texts: list[str], index: np.ndarray, len_a: np.ndarray, budget: int) -> Tokenized:
        """Ids of the distinct second texts; long ones are tokenized from a cut when that
        cannot change what truncation keeps (right truncation only)."""
        if not self.right:
            return self._texts.encode(texts)
        # A text paired with several firsts must truncate right for the shortest and the
        # longest of them (the conditions of _cut_decides are monotone in the first length);
        # the shortest leaves it the most room, which sets where it is cut.
        shortest = np.full(len(texts), _UNBOUNDED, dtype=np.int64)
        longest = np.zeros(len(texts), dtype=np.int64)
        np.minimum.at(shortest, index, len_a)
        np.maximum.at(longest, index, len_a)
        room = longest_first(shortest, _UNBOUNDED, budget)[1] + 1
        cuts = [self._cut(t, int(r)) for t, r in zip(texts, room, strict=True)]
        tokens = self._texts.encode(cuts)
        got = tokens.lengths
        was_cut = np.fromiter((len(c) < len(t) for c, t in zip(cuts, texts, strict=True)), dtype=bool, count=len(texts))
        redo = np.flatnonzero(was_cut & ~(_cut_decides(shortest, got, budget) & _cut_decides(longest, got, budget)))
        if len(redo):
            tokens = tokens.replace(redo, self._texts.encode([texts[u] for u in redo]))
        return tokens

    def _cut(self, text: str, tokens: int) -> str:
        """The text up to the first space after room for ``tokens`` tokens."""
        chars = int(self.chars_per_token * tokens)
        if len(text) <= chars:
            return text
        # a plain space ends a word for every tokenizer family; other whitespace may not
        # (control characters are deleted by BERT's normalizer, joining the words around them)
        end = text.find(" ", chars)
        return text if end < 0 else text[:end]

    def _hf_call(self, firsts: Sequence[str], seconds: Sequence[str]) -> PairTokens:
        enc = self.tokenizer(list(firsts), list(seconds), truncation="longest_first", max_length=self.max_length)
        pool, lengths = flatten(enc["input_ids"])
        types = enc.get("token_type_ids") if self.with_types else None
        starts = (np.cumsum(lengths) - lengths)[:, None]
        return PairTokens(pool, flatten(types)[0] if types is not None else None, starts, lengths[:, None])


#: A length longer than any text, for "as much room as the budget leaves".
_UNBOUNDED = 1 << 40


def _cut_decides(len_a: np.ndarray, len_b: np.ndarray, budget: int) -> np.ndarray:
    """Whether a cut second text of ``len_b`` tokens truncates as its whole text would.

    With the second side the longer and the pair over budget, ``longest_first`` keeps a count
    that depends on the first side alone, so any longer text gives the same; that count must
    also leave the cut's last token out, the one a cut inside a word could have changed.
    """
    return (len_b > len_a) & (len_a + len_b > budget) & (longest_first(len_a, len_b, budget)[1] < len_b)

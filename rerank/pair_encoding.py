"""Fast (query, document) tokenization for cross-encoders, identical to the HF pair call.

``tokenizer(queries, docs, truncation="longest_first", max_length=L)`` spends most of a GPU
reranker's time: every pair re-tokenizes its query, every document is tokenized to its end
although at most ``L`` tokens survive, and each encoding is converted to Python dicts.
:class:`PairEncoder` gives the same token ids and type ids with less work:

- each distinct query and document is tokenized once, without special tokens, by the Rust
  tokenizer's batch call (all cores, no offsets);
- a long document is tokenized only up to a space past ``chars_per_token * L`` characters;
  when that prefix holds too few tokens to decide the truncation it is tokenized whole again,
  so the cut never changes a kept token;
- truncation is the tokenizer library's ``longest_first`` rule on lengths, and the special
  tokens come from the tokenizer's own pair template, read once by probing it.

Tokenizers this cannot mirror (slow tokenizers, templates it cannot read) go through the plain
HF call, so the result is the same either way.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.errors import InvalidInput

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

    @property
    def step_types(self) -> tuple[int, int] | None:
        """``(first, second)`` when type ids are one value up to B and another from B on
        (BERT: 0 then 1), so a batch's type ids follow from where B starts; else ``None``."""
        (pre, mid, suf), a, b = self.types, self.a_type, self.b_type
        if set(pre) | {a} | set(mid) == {a} and {b} | set(suf) == {b}:
            return a, b
        return None

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


def longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Tokens kept of each side under the tokenizers library's ``longest_first`` truncation.

    The shorter side keeps what it has when the longer one can absorb the cut; when both are
    longer than half the budget, the shorter keeps ``budget // 2`` and the longer the rest.
    """
    if len_a + len_b <= budget:
        return len_a, len_b
    swap = len_a > len_b
    n1, n2 = (len_b, len_a) if swap else (len_a, len_b)
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


@dataclass
class PairTokens:
    """Token ids of each pair, in input order, and what the model's type ids need.

    Type ids are either a step (``steps``: the position where the second segment starts in
    each row, with the two values in ``step_values``) or one list per row (``types``).
    """

    ids: list[list[int]]
    types: list[list[int]] | None = None
    steps: np.ndarray | None = None
    step_values: tuple[int, int] = (0, 1)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    def batch(self, rows: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` (and ``token_type_ids``) of these rows, right-padded."""
        lengths = np.fromiter((len(self.ids[r]) for r in rows), dtype=np.int64, count=len(rows))
        width = int(lengths.max(initial=0))
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : lengths[i]] = self.ids[r]
        positions = np.arange(width)
        out = {"input_ids": ids, "attention_mask": (positions < lengths[:, None]).astype(np.int64)}
        if self.steps is not None:
            first, second = self.step_values
            second_part = (positions >= self.steps[rows][:, None]) & (positions < lengths[:, None])
            out["token_type_ids"] = np.where(second_part, second, first).astype(np.int64)
            out["token_type_ids"][positions >= lengths[:, None]] = 0
        elif self.types is not None:
            types = np.zeros((len(rows), width), dtype=np.int64)
            for i, r in enumerate(rows):
                types[i, : lengths[i]] = self.types[r]
            out["token_type_ids"] = types
        return out


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
        self._backend = self._single_backend(tokenizer)
        self.template = PairTemplate.probe(self._backend) if self._backend is not None else None
        if self.template is not None and self.template.num_special >= max_length:
            raise InvalidInput(f"max_length {max_length} leaves no room beside {self.template.num_special} special tokens")
        if self.template is None:
            log.info("pair template of %s not readable: using the tokenizer's pair call", type(tokenizer).__name__)

    @staticmethod
    def _single_backend(tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        if backend is None:
            return None
        from tokenizers import Tokenizer

        # a copy: the HF wrapper sets truncation and padding on its own backend per call
        single = Tokenizer.from_str(backend.to_str())
        single.no_truncation()
        single.no_padding()
        return single

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
        a_ids = self._tokens(firsts)
        b_ids = self._tokens(seconds, partners=a_ids, budget=budget)
        steps = self.template.step_types if self.with_types else None
        pre, mid = len(self.template.ids[0]), len(self.template.ids[1])
        ids, types, starts = [], [], []
        for a, b in zip(a_ids, b_ids, strict=True):
            ka, kb = longest_first(len(a), len(b), budget)
            row, row_types = self.template.assemble(_keep(a, ka, self.right), _keep(b, kb, self.right))
            ids.append(row)
            if steps is not None:
                starts.append(pre + ka + mid)
            elif self.with_types:
                types.append(row_types)
        if steps is not None:
            return PairTokens(ids, steps=np.asarray(starts, dtype=np.int64), step_values=steps)
        return PairTokens(ids, types if self.with_types else None)

    def _tokens(
        self, texts: Sequence[str], partners: list[list[int]] | None = None, budget: int = 0
    ) -> list[list[int]]:
        """Ids of each text without special tokens; distinct texts are tokenized once. With
        ``partners`` (the other side of each pair) long texts are cut first."""
        slot: dict[str, int] = {}
        index = [slot.setdefault(t, len(slot)) for t in texts]
        unique = list(slot)
        if partners is None or not self.right:
            return self._lookup(unique, index)
        # A text paired with several firsts must truncate right for the shortest and the
        # longest of them (the conditions of _cut_decides are monotone in the first length);
        # the shortest leaves it the most room, which sets where it is cut.
        shortest, longest = [sys.maxsize] * len(unique), [0] * len(unique)
        for u, a in zip(index, partners, strict=True):
            shortest[u], longest[u] = min(shortest[u], len(a)), max(longest[u], len(a))
        cuts = [
            self._cut(t, longest_first(short, sys.maxsize, budget)[1] + 1)
            for t, short in zip(unique, shortest, strict=True)
        ]
        encoded = [e.ids for e in self._backend.encode_batch_fast(cuts, add_special_tokens=False)]
        redo = [
            u for u, (t, c, ids) in enumerate(zip(unique, cuts, encoded, strict=True))
            if len(c) < len(t) and not (_cut_decides(shortest[u], len(ids), budget)
                                        and _cut_decides(longest[u], len(ids), budget))
        ]  # fmt: skip
        if redo:
            again = self._backend.encode_batch_fast([unique[u] for u in redo], add_special_tokens=False)
            for u, e in zip(redo, again, strict=True):
                encoded[u] = e.ids
        return [encoded[i] for i in index]

    def _lookup(self, unique: list[str], index: list[int]) -> list[list[int]]:
        encoded = [e.ids for e in self._backend.encode_batch_fast(unique, add_special_tokens=False)]
        return [encoded[i] for i in index]

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
        types = enc.get("token_type_ids") if self.with_types else None
        return PairTokens(list(enc["input_ids"]), list(types) if types is not None else None)


def _cut_decides(len_a: int, len_b: int, budget: int) -> bool:
    """Whether a cut second text of ``len_b`` tokens truncates as its whole text would.

    With the second side the longer and the pair over budget, ``longest_first`` keeps a count
    that depends on the first side alone, so any longer text gives the same; that count must
    also leave the cut's last token out, the one a cut inside a word could have changed.
    """
    if len_b <= len_a or len_a + len_b <= budget:
        return False
    return longest_first(len_a, len_b, budget)[1] < len_b


def _keep(ids: list[int], n: int, right: bool) -> list[int]:
    if n >= len(ids):
        return ids
    return ids[:n] if right else ids[len(ids) - n :]

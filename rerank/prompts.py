"""Listwise prompts (RankGPT, RankVicuna, RankZephyr) and the parsing of their answers.

A window of passages is shown numbered ``[1] ...`` (or lettered ``[A] ...`` for FIRST,
whose identifiers must be single tokens); the model answers ``[2] > [1] > ...``. Parsing
never fails: unknown, repeated and out-of-range identifiers are dropped, missing ones are
appended in their input order, and an answer with no identifier at all keeps the input
order (and says so).
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cascade.retrieval.errors import InvalidInput

log = logging.getLogger(__name__)

PromptStyle = Literal["rankgpt", "rankvicuna", "rankzephyr"]
Identifiers = Literal["numeric", "alpha"]
PROMPT_STYLES = ("rankgpt", "rankvicuna", "rankzephyr")

RANKGPT_SYSTEM = "You are RankGPT, an intelligent assistant that can rank passages based on their relevancy to the query."
RANKLLM_SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query."


def identifiers(kind: Identifiers, n: int) -> list[str]:
    """The first ``n`` identifiers: ``"1".."n"`` or ``"A"..``; alpha stops at 26."""
    if kind == "numeric":
        return [str(i + 1) for i in range(n)]
    if kind == "alpha":
        if n > 26:
            raise InvalidInput(f"alphabetical identifiers stop at 26 passages per window, got {n}")
        return list(string.ascii_uppercase[:n])
    raise InvalidInput(f"identifiers must be 'numeric' or 'alpha', got {kind!r}")


def labels_for_example(kind: Identifiers, index: int) -> str:
    return identifiers(kind, index + 1)[index]


def cut_words(text: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words of ``text``, bracketed numbers defused.

    ``[3]`` inside a passage would read as an identifier, so it becomes ``(3)`` (as rank_llm does).
    """
    words = text.split()
    text = " ".join(words[:max_words])
    return re.sub(r"\[(\w{1,3})\]", r"(\1)", text)


@dataclass(frozen=True)
class PromptFormat:
    """Builds chat messages for one window.

    Args:
        style: ``"rankgpt"`` (one message per passage, each acknowledged by the assistant) or
            ``"rankvicuna"`` / ``"rankzephyr"`` (rank_llm's single user message; they differ
            only in the chat template the model applies).
        ids: numeric or alphabetical identifiers.
        max_passage_words: passages are cut to this many words.
    """

    style: PromptStyle = "rankzephyr"
    ids: Identifiers = "numeric"
    max_passage_words: int = 100

    def __post_init__(self) -> None:
        if self.style not in PROMPT_STYLES:
            raise InvalidInput(f"unknown prompt style {self.style!r}; valid: {', '.join(PROMPT_STYLES)}")
        identifiers(self.ids, 1)
        if self.max_passage_words < 1:
            raise InvalidInput(f"max_passage_words must be >= 1, got {self.max_passage_words}")

    def messages(self, query: str, passages: Sequence[str]) -> list[dict[str, str]]:
        """Chat messages asking for a ranking of ``passages`` (texts, in window order)."""
        n = len(passages)
        labels = identifiers(self.ids, n)
        kind = "numerical" if self.ids == "numeric" else "alphabetical"
        # the examples each original prompt gives; rank_llm's names [4] only when there is a 4th passage
        first, second = (3, 1) if n >= 4 else (1, 0)
        example = f"[{labels_for_example(self.ids, first)}] > [{labels_for_example(self.ids, second)}]"
        texts = [cut_words(p, self.max_passage_words) for p in passages]
        if self.style == "rankgpt":
            msgs = [
                {"role": "system", "content": RANKGPT_SYSTEM},
                {"role": "user", "content": f"I will provide you with {n} passages, each indicated by "
                                            f"{'number' if self.ids == 'numeric' else 'alphabetical'} "
                                            f"identifier []. \nRank the passages based on their relevance to query: {query}."},
                {"role": "assistant", "content": "Okay, please provide the passages."},
            ]  # fmt: skip
            for label, text in zip(labels, texts, strict=True):
                msgs.append({"role": "user", "content": f"[{label}] {text}"})
                msgs.append({"role": "assistant", "content": f"Received passage [{label}]."})
            msgs.append({"role": "user", "content": (
                f"Search Query: {query}. \nRank the {n} passages above based on their relevance to the search "
                "query. The passages should be listed in descending order using identifiers. The most relevant "
                "passages should be listed first. The output format should be [] > [], e.g., "
                f"[{labels_for_example(self.ids, 0)}] > [{labels_for_example(self.ids, 1)}]. "
                "Only response the ranking results, do not say any word or explain.")})  # fmt: skip
            return msgs
        body = (
            f"I will provide you with {n} passages, each indicated by a {kind} identifier []. "
            f"Rank the passages based on their relevance to the search query: {query}.\n\n"
            + "".join(f"[{label}] {text}\n" for label, text in zip(labels, texts, strict=True))
            + f"\nSearch Query: {query}.\nRank the {n} passages above based on their relevance to the search "
            "query. All the passages should be included and listed using identifiers, in descending order of "
            f"relevance. The output format should be [] > [], e.g., {example}. Only respond with the ranking "
            "results, do not say any word or explain."
        )
        return [{"role": "system", "content": RANKLLM_SYSTEM}, {"role": "user", "content": body}]

    def answer_template(self, n: int) -> str:
        """A complete answer for ``n`` passages; its token count sizes the generation budget."""
        return " > ".join(f"[{label}]" for label in identifiers(self.ids, n))


def parse_permutation(answer: str, n: int, ids: Identifiers = "numeric") -> tuple[list[int], bool]:
    """Read a ranking answer for ``n`` passages into a full permutation of ``range(n)``.

    Args:
        answer: the model's text, e.g. ``"[2] > [1] > [3]"``.
        n: passages in the window.
        ids: the identifier kind the prompt used.

    Returns:
        ``(permutation, parsed)``: identifiers in answer order (unknown, repeated and
        out-of-range ones dropped), then the missing ones in input order; ``parsed`` is
        False when no identifier was found, in which case the permutation is the input order.
    """
    if ids == "numeric":
        found = [int(tok) - 1 for tok in re.findall(r"\d+", answer)]
    else:
        letters = re.findall(r"\[\s*([A-Za-z])\s*\]", answer) or re.findall(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", answer)
        found = [ord(c.upper()) - ord("A") for c in letters]
    seen: dict[int, None] = {}
    for i in found:
        if 0 <= i < n and i not in seen:
            seen[i] = None
    order = list(seen)
    order += [i for i in range(n) if i not in seen]
    return order, bool(seen)

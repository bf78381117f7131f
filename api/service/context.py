"""RAG context: the best passages of a search packed into a token budget, with citations.

Passages are taken best first; one whose word 3-shingles overlap an already chosen
passage's by a Jaccard similarity at or above the threshold is a near-duplicate and is
skipped (the same paragraph ingested twice, or two overlapping chunks); one that does not
fit the remaining budget is skipped so that a shorter, lower-ranked one may still fit.
Each passage is numbered; the numbers are the citation markers (``[1]``) an answer uses,
and each maps back to the document id, title and character span it came from.

Optionally the passages are graded first, as Corrective RAG's retrieval evaluator does (Yan et
al., 2024, "Corrective Retrieval Augmented Generation"): a reranker scores each passage's
usefulness for the query, the ones under the lower threshold are dropped, and the context says
how far it can be trusted: ``high`` when some passage reaches the upper threshold, ``low`` when
none reaches the lower one (nothing usable: an app may decline to answer), ``ambiguous`` between.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.types import Query

_WORD = re.compile(r"\w+")


def whitespace_tokens(text: str) -> int:
    return len(text.split())


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    """Word n-grams of the lowercased text (the words themselves for texts under n words)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset((w,) for w in words)
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True)
class Passage:
    marker: int
    id: str  # chunk id
    doc_id: str
    title: str
    start: int | None
    end: int | None
    score: float
    text: str
    tokens: int
    usefulness: float | None = None  # the evaluator's score, when the passages were graded


Confidence = Literal["high", "ambiguous", "low"]


@dataclass
class PackedContext:
    passages: list[Passage]
    text: str
    tokens: int
    duplicates_removed: int = 0
    skipped_for_budget: int = 0
    citations: dict[int, Passage] = field(default_factory=dict)
    confidence: Confidence | None = None  # set when the passages were graded
    dropped_not_useful: int = 0


@dataclass(frozen=True)
class Usefulness:
    """CRAG's thresholds, in the evaluator's score units (a cross-encoder's logits or
    probabilities): a passage scoring under ``lower`` is dropped; one at or over ``upper``
    makes the confidence ``high``. ``reranker``: a served reranker's name (``None``: the
    pipeline's last rerank stage, else the server's default reranker)."""

    upper: float
    lower: float
    reranker: str | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.upper) and np.isfinite(self.lower)) or self.lower > self.upper:
            raise InvalidInput(
                f"usefulness thresholds need finite lower <= upper, got lower={self.lower} upper={self.upper}"
            )

    def grade(self, scores: Sequence[float]) -> tuple[list[bool], Confidence]:
        """Which passages to keep (score >= lower), and the confidence of what is kept."""
        keep = [s >= self.lower for s in scores]
        if any(s >= self.upper for s in scores):
            return keep, "high"
        return keep, "ambiguous" if any(keep) else "low"


def grade_hits(
    query: str, hits: Sequence[Any], reranker: Any, usefulness: Usefulness
) -> tuple[list[Any], dict[str, float], Confidence]:
    """Score the hits' passages with ``reranker`` (anything with ``rerank_batch``) and keep the
    useful ones, in their search order.

    Returns: the kept hits, each scored passage's usefulness by passage id, and the confidence.
    """
    docs = [h.document for h in hits if h.document is not None]
    ranking = reranker.rerank_batch([Query("q", query)], [docs])[0] if docs else None
    scores = dict(zip(ranking.doc_ids, ranking.scores, strict=True)) if ranking else {}
    keep, confidence = usefulness.grade([scores[d.id] for d in docs])
    kept_ids = {d.id for d, k in zip(docs, keep, strict=True) if k}
    return [h for h in hits if h.document is not None and h.document.id in kept_ids], scores, confidence


def format_passage(marker: int, title: str, text: str) -> str:
    return f"[{marker}] {title}\n{text}" if title else f"[{marker}] {text}"


def pack_context(
    hits: Sequence[Any],
    max_tokens: int,
    count_tokens: Callable[[str], int] = whitespace_tokens,
    dedup_threshold: float = 0.9,
    usefulness: dict[str, float] | None = None,
) -> PackedContext:
    """Pack search hits (objects with ``id``, ``doc_id``, ``score`` and ``document``) into
    at most ``max_tokens`` tokens of context, counting each formatted passage block.

    Args:
        hits: best first; hits without a document are skipped.
        max_tokens: the budget for the whole context text.
        count_tokens: tokens of a string (whitespace words or a model's tokenizer).
        dedup_threshold: Jaccard similarity of 3-shingles at which a passage is a duplicate
            (above 1 disables deduplication).
        usefulness: the evaluator's score per passage id (:func:`grade_hits`), kept on the passages.

    Returns:
        The chosen passages in rank order, numbered from 1, and the context text.
    """
    chosen: list[Passage] = []
    seen: list[frozenset] = []
    used = dups = skipped = 0
    for hit in hits:
        doc = hit.document
        if doc is None:
            continue
        sh = shingles(doc.text)
        if any(jaccard(sh, other) >= dedup_threshold for other in seen):
            dups += 1
            continue
        marker = len(chosen) + 1
        block = format_passage(marker, doc.title, doc.text)
        n = count_tokens(block)
        if used + n > max_tokens:
            skipped += 1
            continue
        meta = doc.metadata
        span = (meta.get("start"), meta.get("end"))
        useful = None if usefulness is None else usefulness.get(doc.id)
        chosen.append(Passage(marker, doc.id, hit.doc_id, doc.title, *span, hit.score, doc.text, n, useful))
        seen.append(sh)
        used += n
    text = "\n\n".join(format_passage(p.marker, p.title, p.text) for p in chosen)
    return PackedContext(chosen, text, used, dups, skipped, {p.marker: p for p in chosen})

"""The few types every stage speaks: documents, queries, scored hits, rankings and runs.

Any retriever feeds any fusion and any reranker because they all exchange these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidInput

#: Relevance judgments: query id -> doc id -> graded relevance.
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class Document:
    """A unit of the corpus (a passage, a chunk or a whole file)."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def contents(self) -> str:
        """Title and text as one string, the way BEIR's flat indexes see a document."""
        return f"{self.title} {self.text}" if self.title else self.text

    @classmethod
    def from_json(cls, obj: Any, id_field: str = "_id", text_field: str = "text",
                  title_field: str | None = "title", metadata_field: str | None = "metadata") -> Document:  # fmt: skip
        """A document from one parsed JSON line (BEIR's ``corpus.jsonl`` fields by default)."""
        if not isinstance(obj, dict) or id_field not in obj or text_field not in obj:
            raise InvalidInput(f"expected an object with {id_field!r} and {text_field!r}")
        meta = obj.get(metadata_field) if metadata_field else None
        return cls(
            id=str(obj[id_field]),
            text=str(obj[text_field] or ""),
            title=str(obj.get(title_field) or "") if title_field else "",
            metadata=meta if isinstance(meta, dict) else {},
        )


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    doc_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Ranking:
    """The hits for one query, best first, held as two parallel tuples.

    Build it with :meth:`from_scores`; iterate it for :class:`Hit` objects.
    """

    query_id: str
    doc_ids: tuple[str, ...]
    scores: tuple[float, ...]

    @classmethod
    def from_scores(
        cls,
        query_id: str,
        doc_ids: Sequence[str] | np.ndarray,
        scores: Sequence[float] | np.ndarray,
        k: int | None = None,
    ) -> Ranking:
        """Order by score descending, ties broken by doc id ascending, and keep the top ``k``.

        The tie-break makes every ranking deterministic, so two runs of the same pipeline
        (or a sharded and a single index) produce identical output.
        """
        if len(doc_ids) != len(scores):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(scores)} scores")
        ids = doc_ids if isinstance(doc_ids, np.ndarray) else np.asarray(list(doc_ids), dtype=str)
        scores = np.asarray(scores, dtype=np.float64)
        # np.lexsort sorts by the last key first: score descending, then id ascending.
        order = np.lexsort((ids, -scores)) if len(ids) > 1 else np.arange(len(ids))
        if k is not None:
            order = order[:k]
        return cls(query_id, tuple(ids[order].tolist()), tuple(scores[order].tolist()))

    @classmethod
    def from_hits(cls, query_id: str, hits: Iterable[Hit], k: int | None = None) -> Ranking:
        hits = list(hits)
        return cls.from_scores(query_id, [h.doc_id for h in hits], [h.score for h in hits], k)

    @property
    def hits(self) -> tuple[Hit, ...]:
        return tuple(map(Hit, self.doc_ids, self.scores))

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __iter__(self) -> Iterator[Hit]:
        return map(Hit, self.doc_ids, self.scores)

    def top(self, k: int) -> Ranking:
        return Ranking(self.query_id, self.doc_ids[:k], self.scores[:k])


#: A run: query id -> ranking, the unit that evaluation and TREC files deal in.
Run = dict[str, Ranking]


def run_from_rankings(rankings: Iterable[Ranking]) -> Run:
    return {r.query_id: r for r in rankings}


def check_unique(docs: Iterable[Document]) -> Iterator[Document]:
    """Pass documents through, failing on the first repeated id (an index needs unique ids)."""
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise InvalidInput(f"duplicate document id {doc.id!r}")
        seen.add(doc.id)
        yield doc

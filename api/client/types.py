"""What the client returns: one exception type and small dataclasses built from the
server's JSON (unknown keys are ignored, so a newer server does not break an older client)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cascade.retrieval.errors import CascadeError


class CascadeAPIError(CascadeError):
    """Every failure of a client call: an error answer of the server, a malformed answer, or
    a transport failure.

    Attributes:
        status: the HTTP status; ``None`` when no status applies (the server could not be
            reached, timed out, or reported an error inside an already started stream).
        type: the server's error type (``NotFound``, ``ValidationError``, ...) or, for a
            transport failure, the httpx exception's name (``ConnectError``, ``ReadTimeout``).
        message: the server's message.
        body: the decoded error body (``{"error": {"type", "message"}}``) when there was one.

    Example:
        >>> try:
        ...     client.search("nope", "stem cells")
        ... except CascadeAPIError as e:
        ...     print(e.status, e.type)  # 404 NotFound
    """

    def __init__(self, status: int | None, type: str, message: str, body: Any = None):
        super().__init__(status, type, message, body)
        self.status, self.type, self.message, self.body = status, type, message, body

    def __str__(self) -> str:
        return f"{self.status if self.status is not None else 'no status'} {self.type}: {self.message}"


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result. ``id`` is the chunk's id, ``doc_id`` the document it came from (the
    same id when the document is one chunk); ``rank`` counts from 1. ``title``, ``text`` and
    ``metadata`` are ``None`` when the search did not ask for that field."""

    id: str
    doc_id: str
    score: float
    rank: int
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any], rank: int) -> Hit:
        return cls(d["id"], d.get("doc_id", d["id"]), float(d["score"]), rank,
                   d.get("title"), d.get("text"), d.get("metadata"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class QueryResult:
    query: str
    hits: list[Hit]


@dataclass(frozen=True, slots=True)
class SearchResponse:
    """``results`` holds one :class:`QueryResult` per query, in request order; ``hits`` is the
    first (for a single query: the only) query's hits."""

    collection: str
    pipeline: str
    results: list[QueryResult]
    timings_ms: dict[str, float]

    @property
    def hits(self) -> list[Hit]:
        return self.results[0].hits if self.results else []

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SearchResponse:
        results = [
            QueryResult(r["query"], [Hit.from_json(h, i) for i, h in enumerate(r["hits"], 1)])
            for r in d["results"]
        ]
        return cls(d["collection"], d["pipeline"], results, dict(d.get("timings_ms", {})))


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    id: int
    chunks: int
    live_chunks: int


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    num_documents: int
    num_chunks: int
    segments: list[SegmentInfo]
    generation: int
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CollectionInfo:
        segments = [SegmentInfo(s["id"], s["chunks"], s["live_chunks"]) for s in d.get("segments", [])]
        return cls(d["name"], d["num_documents"], d["num_chunks"], segments, d.get("generation", 0),
                   d.get("config", {}))  # fmt: skip


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Totals over every request one :meth:`ingest` call sent (``requests`` of them)."""

    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    requests: int = 0

    def plus(self, d: dict[str, Any]) -> IngestResult:
        return IngestResult(self.collection, self.added + d["added"], self.updated + d["updated"],
                            self.unchanged + d["unchanged"], self.chunks + d.get("chunks", 0), self.requests + 1)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A stored document's record (its text lives in its chunks)."""

    id: str
    title: str
    metadata: dict[str, Any]
    segment: int | None = None
    num_chunks: int = 0

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StoredDocument:
        return cls(
            d["id"], d.get("title", ""), d.get("metadata", {}), d.get("segment"), d.get("num_chunks", 0)
        )


@dataclass(frozen=True, slots=True)
class CompactResult:
    collection: str
    compacted: Any
    segments: int


@dataclass(frozen=True, slots=True)
class Citation:
    """A packed passage; ``marker`` is the number the context text cites it by."""

    marker: int
    id: str
    doc_id: str
    title: str
    start: int | None
    end: int | None
    score: float
    tokens: int
    text: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Citation:
        return cls(d["marker"], d["id"], d["doc_id"], d.get("title", ""), d.get("start"), d.get("end"),
                   float(d["score"]), d.get("tokens", 0), d.get("text", ""))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Context:
    """Passages packed into a token budget: ``text`` is the context to put in a prompt."""

    text: str
    tokens: int
    passages: list[Citation]
    duplicates_removed: int
    skipped_for_budget: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Context:
        return cls(d["context"], d["tokens"], [Citation.from_json(p) for p in d["passages"]],
                   d.get("duplicates_removed", 0), d.get("skipped_for_budget", 0))  # fmt: skip


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """One event of a streamed answer, in this order: one ``"citations"`` (``citations``
    set), ``"delta"`` events (``text`` is the next piece of the answer), one ``"done"``
    (``text`` is the whole answer, ``cited`` the markers it uses). ``data`` is the raw event."""

    event: str
    text: str = ""
    citations: list[Citation] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RerankResult:
    """``index`` points into the documents sent; results come best first."""

    index: int
    score: float
    text: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingsResult:
    """One vector per input, in input order."""

    vectors: list[list[float]]
    model: str
    usage: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EmbeddingsResult:
        data = sorted(d["data"], key=lambda e: e["index"])
        return cls([e["embedding"] for e in data], d.get("model", ""), dict(d.get("usage", {})))

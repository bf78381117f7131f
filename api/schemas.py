"""Request and response bodies, with their limits: Cascade's own. The model endpoints, in the
wire formats of OpenAI, Cohere and TEI, have theirs in :mod:`api.schemas_models`."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cascade.api.service.config import NAME_PATTERN, RESERVED_METADATA, check_collection_chunking
from cascade.retrieval.chunking import ChunkConfig

MAX_QUERY_CHARS = 4096
MAX_QUERIES = 256
MAX_K = 1000


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty or only whitespace")
    return v


QueryText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS), AfterValidator(_not_blank)
]
CollectionName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Filter = dict[str, Any]
PipelineArg = Annotated[
    str | dict[str, Any] | None,
    Field(
        description="a preset name (bm25, hybrid, ...) or an inline pipeline spec; default: the collection's"
    ),
]
Field_ = Literal["text", "title", "metadata"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- collections -------------------------------------------------------------------------


class ChunkingIn(ChunkConfig):
    """A new collection's chunking as the request states it: :class:`ChunkConfig`'s fields
    and limits, checked here (422 ``ValidationError``). The rule between the two fields is
    left to the engine, so the API reports it as the CLI does (422 ``InvalidInput``)."""

    def _overlap_below_max_tokens(self) -> ChunkingIn:  # replaces the validator of that name
        return self


class CreateCollection(_Strict):
    name: CollectionName
    pipeline: PipelineArg = "bm25"
    chunking: Annotated[ChunkingIn, AfterValidator(check_collection_chunking)] = ChunkingIn()
    compaction: dict[str, Any] | None = None


class SegmentInfo(BaseModel):
    id: int
    chunks: int
    live_chunks: int


class CollectionInfo(BaseModel):
    name: str
    num_documents: int
    num_chunks: int
    segments: list[SegmentInfo]
    generation: int
    config: dict[str, Any]


class CollectionList(BaseModel):
    collections: list[str]


class SnapshotOut(BaseModel):
    """A snapshot archive of a collection (:mod:`cascade.api.service.snapshots`)."""

    name: str
    collection: str
    size: int = Field(description="bytes of the archive")
    sha256: str = Field(description="of the whole archive file")
    created: str
    num_documents: int


class SnapshotList(BaseModel):
    collection: str
    snapshots: list[SnapshotOut]


class RestoreIn(_Strict):
    name: CollectionName | None = Field(None, description="restore as this collection (default: the snapshot's own)")


#: A document's own fields; any other field of a document object becomes metadata.
DOCUMENT_FIELDS = ("id", "_id", "text", "title", "metadata")


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _fields_to_metadata(data: Any) -> Any:
    """Fields other than ``DOCUMENT_FIELDS`` move into ``metadata`` (the Elasticsearch /
    Typesense convention: ``{"id": "a", "text": "...", "year": 2021}`` has metadata
    ``{"year": 2021}``), merged with an explicit ``metadata`` object. A key in both must have
    the same value there (else the document is refused: neither silently wins); keys reserved
    for chunk offsets are refused; values are kept as they are (a filter matches scalars only)."""
    if not isinstance(data, dict):
        return data
    extra = {k: v for k, v in data.items() if k not in DOCUMENT_FIELDS}
    if not extra:
        return data
    meta = data.get("metadata", {})
    if not isinstance(meta, dict):
        return data  # the metadata field's own error says what is wrong
    reserved = [k for k in extra if k in RESERVED_METADATA]
    if reserved:
        raise PydanticCustomError(
            "reserved_field",
            "field '{key}' would become metadata, but {reserved} are reserved for chunk offsets: rename it",
            {"key": reserved[0], "reserved": ", ".join(RESERVED_METADATA)},
        )
    clash = [k for k in extra if k in meta and not _same(meta[k], extra[k])]
    if clash:
        raise PydanticCustomError(
            "metadata_clash",
            "field '{key}' is given both as a field and in metadata, with different values: keep one",
            {"key": clash[0]},
        )
    own = {k: v for k, v in data.items() if k in DOCUMENT_FIELDS}
    return {**own, "metadata": {**extra, **meta}}


class DocumentIn(_Strict):
    """A document: ``id`` (or ``_id``), ``text``, ``title``, ``metadata``; any other field
    becomes metadata (see :func:`_fields_to_metadata`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"additionalProperties": True})

    id: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        validation_alias=AliasChoices("id", "_id"), description="the document id (BEIR's `_id` also accepted)"
    )
    text: Annotated[str, StringConstraints(max_length=5_000_000)]
    title: Annotated[str, StringConstraints(max_length=10_000)] = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    _fold = model_validator(mode="before")(_fields_to_metadata)


class DocumentsIn(_Strict):
    documents: list[DocumentIn] = Field(min_length=1)


class IngestOut(BaseModel):
    collection: str
    added: int
    updated: int
    unchanged: int
    chunks: int
    segment: int | None


class DeleteIn(_Strict):
    ids: list[Annotated[str, StringConstraints(min_length=1, max_length=512)]] | None = Field(
        None, max_length=100_000
    )
    filter: Filter | None = None


class DeleteOut(BaseModel):
    collection: str
    deleted: int


# -- search ------------------------------------------------------------------------------


MAX_PREFETCHES = 16
MAX_PREFETCH_LIMIT = 10_000
# Qdrant Query API fields Cascade does not take, with what to do instead
_QDRANT_ONLY = {
    "score_threshold": "cut the hits client-side",
    "lookup_from": "search the other collection in its own request",
    "offset": "ask for a larger limit and skip client-side",
    "with_vector": "Cascade returns no vectors",
    "shard_key": "Cascade has no shard keys",
}


def _listed(v: Any) -> Any:
    return [v] if isinstance(v, dict) else v  # Qdrant takes one prefetch object or a list


def _no_qdrant_only(data: Any) -> Any:
    if isinstance(data, dict):
        for key in data:
            if key in _QDRANT_ONLY:
                raise PydanticCustomError(
                    "unsupported", "Qdrant's '{key}' is not supported: {hint}", {"key": key, "hint": _QDRANT_ONLY[key]}
                )
    return data


SearchQuery = (
    QueryText | Annotated[list[QueryText], Field(min_length=1, max_length=MAX_QUERIES)] | dict[str, Any]
)


class Prefetch(_Strict):
    """One node of a Qdrant-style prefetch tree (:mod:`cascade.api.service.prefetch`)."""

    prefetch: Annotated[
        # the length limits on the list itself: on the union they were applied to a null too (a 500)
        Annotated[list[Prefetch], Field(min_length=1, max_length=MAX_PREFETCHES)] | None, BeforeValidator(_listed)
    ] = None
    query: SearchQuery | None = Field(
        None, description='the query text, or {"fusion": "rrf"|"dbsf"|"zscore"|"minmax"}, {"rrf": {"k", "weights"}}, '
        '{"rerank": NAME} over its prefetches'
    )
    using: str | None = Field(None, max_length=200, description="the retriever family to search (bm25, dense, ...)")
    limit: int = Field(10, ge=1, le=MAX_PREFETCH_LIMIT, description="hits this stage hands up")
    filter: Filter | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="search-time parameters of the retriever")
    index_params: dict[str, Any] | None = Field(
        None, description="build parameters picking one of several indexes of the family"
    )

    _unsupported = model_validator(mode="before")(_no_qdrant_only)


class SearchIn(_Strict):
    collection: CollectionName
    query: SearchQuery | None = Field(
        None, description="the query text (or texts); with prefetch also a Qdrant query object"
    )
    pipeline: PipelineArg = None
    prefetch: Annotated[
        # the length limits on the list itself: on the union they were applied to a null too (a 500)
        Annotated[list[Prefetch], Field(min_length=1, max_length=MAX_PREFETCHES)] | None, BeforeValidator(_listed)
    ] = Field(None, description="a Qdrant-style hybrid query; instead of pipeline")
    k: int = Field(10, ge=1, le=MAX_K)
    limit: int | None = Field(None, ge=1, le=MAX_K, description="Qdrant's name for k")
    filter: Filter | None = None
    fields: list[Field_] = Field(default=["title", "text"], max_length=3)
    with_payload: bool | None = Field(
        None, description='Qdrant\'s: true = "fields": ["title", "text", "metadata"], false = "fields": []'
    )
    explain: bool = Field(
        False, description="each hit's rank at every stage (retrievers, fusion, rerankers) and the stage names"
    )

    _unsupported = model_validator(mode="before")(_no_qdrant_only)

    @model_validator(mode="after")
    def _one_way(self) -> SearchIn:
        if self.with_payload is not None:
            if "fields" in self.model_fields_set:
                raise PydanticCustomError("fields_and_payload", "give fields or with_payload (Qdrant's name), not both")
            self.fields = ["title", "text", "metadata"] if self.with_payload else []
        if self.pipeline is not None and self.prefetch is not None:
            raise PydanticCustomError(
                "pipeline_and_prefetch",
                "give either pipeline or prefetch, not both: a prefetch tree is a pipeline "
                "(retrievers, fusion, rerankers) of its own",
            )
        if self.limit is not None:
            if "k" in self.model_fields_set and self.k != self.limit:
                raise PydanticCustomError("k_and_limit", "k and limit are one setting (limit is Qdrant's name); give one")
            self.k = self.limit
        if self.prefetch is None:
            if self.query is None:
                raise PydanticCustomError("missing", "query: Field required")
            if isinstance(self.query, dict):
                raise PydanticCustomError(
                    "query_object", "query: a query object ({\"fusion\": ...}) goes with prefetch; "
                    "without prefetch the query is a text or a list of texts"
                )
        return self


class HitOut(BaseModel):
    id: str
    doc_id: str
    score: float
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None
    ranks: dict[str, int] | None = Field(
        None, description="with explain: the hit's 1-based rank per stage; a stage that did not list it is absent"
    )


class QueryResult(BaseModel):
    query: str
    hits: list[HitOut]


class SearchOut(BaseModel):
    collection: str
    pipeline: str
    results: list[QueryResult]
    timings_ms: dict[str, float]
    stages: list[str] | None = Field(None, description="with explain: the stages in pipeline order")


# The model endpoints' bodies (OpenAI, Cohere, TEI wire formats) are in api/schemas_models.py.


# -- RAG ---------------------------------------------------------------------------------


class EvaluatorIn(_Strict):
    """CRAG's retrieval evaluator: a reranker grades each passage's usefulness (thresholds in
    its score units: a cross-encoder's logits, or probabilities for one with a sigmoid)."""

    reranker: str | None = Field(
        None, description="a served reranker (alias or family); default: the pipeline's last reranker, "
        "else the server's first served reranker",
    )  # fmt: skip
    upper: float = Field(allow_inf_nan=False, description="a passage at or over this makes the confidence high")
    lower: float = Field(allow_inf_nan=False, description="passages under this are dropped; none left: low")

    @model_validator(mode="after")
    def _ordered(self) -> EvaluatorIn:
        if self.lower > self.upper:
            raise PydanticCustomError(
                "thresholds", "lower ({lower}) must not exceed upper ({upper})", {"lower": self.lower, "upper": self.upper}
            )
        return self


class ContextIn(_Strict):
    collection: CollectionName
    query: QueryText
    pipeline: PipelineArg = None
    k: int = Field(20, ge=1, le=200, description="candidate passages to pack from")
    filter: Filter | None = None
    max_tokens: int = Field(1024, ge=16, le=128_000)
    tokenizer: str | None = Field(None, description="whitespace (default) or an allowed model's tokenizer")
    dedup_threshold: float = Field(0.9, gt=0, le=1.01)
    evaluator: EvaluatorIn | None = Field(
        None, description="grade the passages first and report a confidence (Corrective RAG's evaluator)"
    )


class Citation(BaseModel):
    marker: int
    id: str
    doc_id: str
    title: str
    start: int | None
    end: int | None
    score: float
    tokens: int
    text: str
    usefulness: float | None = Field(None, description="with an evaluator: its score for this passage")


class ContextOut(BaseModel):
    context: str
    tokens: int
    passages: list[Citation]
    duplicates_removed: int
    skipped_for_budget: int
    confidence: Literal["high", "ambiguous", "low"] | None = Field(
        None, description="with an evaluator: high (a passage reached upper), low (none reached lower), else ambiguous"
    )
    dropped_not_useful: int | None = Field(None, description="with an evaluator: passages under its lower threshold")


class AnswerIn(ContextIn):
    stream: bool = True
    temperature: float = Field(0.0, ge=0, le=2)
    max_answer_tokens: int = Field(512, ge=1, le=8192)


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody

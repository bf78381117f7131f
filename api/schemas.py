"""Request and response bodies, with their limits. Wire formats follow Cohere (rerank) and
OpenAI (embeddings); the rest is Cascade's own."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from cascade.api.service.config import NAME_PATTERN, check_collection_chunking
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


class DocumentIn(_Strict):
    id: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        validation_alias=AliasChoices("id", "_id"), description="the document id (BEIR's `_id` also accepted)"
    )
    text: Annotated[str, StringConstraints(max_length=5_000_000)]
    title: Annotated[str, StringConstraints(max_length=10_000)] = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


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


class SearchIn(_Strict):
    collection: CollectionName
    query: QueryText | Annotated[list[QueryText], Field(min_length=1, max_length=MAX_QUERIES)]
    pipeline: PipelineArg = None
    k: int = Field(10, ge=1, le=MAX_K)
    filter: Filter | None = None
    fields: list[Field_] = Field(default=["title", "text"], max_length=3)


class HitOut(BaseModel):
    id: str
    doc_id: str
    score: float
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None


class QueryResult(BaseModel):
    query: str
    hits: list[HitOut]


class SearchOut(BaseModel):
    collection: str
    pipeline: str
    results: list[QueryResult]
    timings_ms: dict[str, float]


# -- rerank (Cohere) ---------------------------------------------------------------------


class RerankDoc(_Strict):
    text: Annotated[str, StringConstraints(max_length=100_000)]


class RerankIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Cohere clients send fields we do not use
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    query: QueryText
    documents: list[Annotated[str, StringConstraints(max_length=100_000)] | RerankDoc] = Field(
        min_length=1, max_length=1000
    )
    top_n: int | None = Field(None, ge=1, le=1000)
    return_documents: bool = False


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDoc | None = None


class RerankOut(BaseModel):
    id: str
    results: list[RerankResult]
    meta: dict[str, Any] = {}


# -- embeddings (OpenAI) -----------------------------------------------------------------


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: (
        QueryText
        | Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=100_000)]],
            Field(min_length=1, max_length=2048),
        ]
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    encoding_format: Literal["float"] = "float"


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float]


class EmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: dict[str, int]


# -- RAG ---------------------------------------------------------------------------------


class ContextIn(_Strict):
    collection: CollectionName
    query: QueryText
    pipeline: PipelineArg = None
    k: int = Field(20, ge=1, le=200, description="candidate passages to pack from")
    filter: Filter | None = None
    max_tokens: int = Field(1024, ge=16, le=128_000)
    tokenizer: str | None = Field(None, description="whitespace (default) or an allowed model's tokenizer")
    dedup_threshold: float = Field(0.9, gt=0, le=1.01)


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


class ContextOut(BaseModel):
    context: str
    tokens: int
    passages: list[Citation]
    duplicates_removed: int
    skipped_for_budget: int


class AnswerIn(ContextIn):
    stream: bool = True
    temperature: float = Field(0.0, ge=0, le=2)
    max_answer_tokens: int = Field(512, ge=1, le=8192)


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody

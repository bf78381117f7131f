"""What a collection is made of and answers with: its configuration (pipeline, chunking,
compaction), the documents it accepts, and the results of ingest and search. The
:class:`~cascade.api.service.collection.Collection` itself lives in :mod:`cascade.api.service.collection`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cascade.indexing.index_set import stage_key
from cascade.retrieval.chunking import ChunkConfig
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.pipeline import PipelineOutput, PipelineSpec, RetrieverStage
from cascade.retrieval.types import Document, check_unique

#: Metadata keys each chunk carries (its parent document and character offsets).
RESERVED_METADATA = ("parent_id", "start", "end")

#: The collection-name rule, for pydantic's ``pattern=`` (the request schemas) and :func:`check_name`.
#: A name is a directory under the data root, so no separators, no leading dot, no ``..``.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def check_name(name: object) -> str:
    """``name`` if it is a valid collection name.

    Raises:
        InvalidInput: anything else, with the one message every path (engine, collection,
            config) gives.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(f"invalid collection name {name!r}: letters, digits, '_', '.', '-', up to 64")
    return name


#: Collections chunk at least this many words: shorter passages carry too little text to rank.
MIN_COLLECTION_CHUNK_TOKENS = 8


def check_collection_chunking(chunking: ChunkConfig) -> ChunkConfig:
    """The collection limit on top of :class:`ChunkConfig`'s own (a pydantic after-validator)."""
    if chunking.max_tokens < MIN_COLLECTION_CHUNK_TOKENS:
        raise ValueError(
            f"max_tokens must be at least {MIN_COLLECTION_CHUNK_TOKENS} for a collection, got {chunking.max_tokens}"
        )
    return chunking


#: A collection's chunking: :class:`ChunkConfig` in whitespace words, with the collection limit.
CollectionChunking = Annotated[ChunkConfig, AfterValidator(check_collection_chunking)]


class CompactionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_segments: int = Field(8, ge=1, le=1000, description="more segments than this trigger a merge")
    min_live_ratio: float = Field(
        0.5, ge=0, le=1, description="a segment with fewer live chunks is rewritten"
    )
    background: bool = True


class CollectionConfig(BaseModel):
    """What a collection is created with. The pipeline's retriever stages are the indexes
    every segment holds; the pipeline itself is the default for searches."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, AfterValidator(check_name)]
    pipeline: PipelineSpec
    chunking: CollectionChunking = ChunkConfig()
    compaction: CompactionSpec = CompactionSpec()

    @property
    def stages(self) -> list[RetrieverStage]:
        seen: dict[str, RetrieverStage] = {}
        for s in self.pipeline.retrievers:
            seen.setdefault(stage_key(s), s.model_copy(update={"search": {}}))
        return list(seen.values())


@dataclass(frozen=True)
class IngestResult:
    added: int
    updated: int
    unchanged: int
    chunks: int
    segment: int | None


@dataclass(frozen=True)
class SearchHit:
    id: str  # chunk id
    doc_id: str  # parent document id
    score: float
    document: Document | None  # the chunk, when fields were asked for


@dataclass(frozen=True)
class SearchOutput:
    """``trace``: the pipeline's output with every stage's lists, when the search was traced."""

    hits: list[list[SearchHit]]
    timings_s: dict[str, float]
    trace: PipelineOutput | None = None


def trim_depth(spec: PipelineSpec, k: int) -> PipelineSpec:
    """One retriever stage and no reranker: its top ``k`` are the answer, deeper hits are never read."""
    if len(spec.retrievers) != 1 or spec.rerankers:
        return spec
    stage = spec.retrievers[0]
    return spec.model_copy(update={"retrievers": [stage.model_copy(update={"depth": min(stage.depth, k)})]})


def content_hash(doc: Document) -> str:
    payload = json.dumps(
        [doc.title, doc.text, dict(doc.metadata)], sort_keys=True, ensure_ascii=False, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def validate_documents(docs: Iterable[Document]) -> list[Document]:
    out = []
    for doc in check_unique(docs):
        if not doc.id or not doc.id.strip():
            raise InvalidInput("a document has an empty id")
        if not (doc.text.strip() or doc.title.strip()):
            raise InvalidInput(f"document {doc.id!r} has no text")
        clash = [k for k in RESERVED_METADATA if k in doc.metadata]
        if clash:
            raise InvalidInput(f"document {doc.id!r}: metadata keys {clash} are reserved for chunk offsets")
        out.append(doc)
    return out

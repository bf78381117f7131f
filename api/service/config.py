"""What a collection is made of and answers with: its configuration (pipeline, chunking,
compaction), the documents it accepts, and the results of ingest and search. The
:class:`~indexing.collection.Collection` itself lives in :mod:`indexing.collection`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.indexing.chunking import ChunkConfig
from cascade.indexing.index_set import stage_key
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.pipeline import PipelineSpec, RetrieverStage
from cascade.retrieval.types import Document, check_unique

#: Metadata keys each chunk carries (its parent document and character offsets).
RESERVED_METADATA = ("parent_id", "start", "end")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ChunkingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_tokens: int = Field(256, ge=8, le=8192, description="whitespace tokens per chunk")
    overlap: int = Field(32, ge=0, le=1024)

    @model_validator(mode="after")
    def _overlap_below_max(self) -> ChunkingSpec:
        if self.overlap >= self.max_tokens:
            raise ValueError(f"overlap ({self.overlap}) must be below max_tokens ({self.max_tokens})")
        return self

    def config(self) -> ChunkConfig:
        return ChunkConfig(self.max_tokens, self.overlap)


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
    name: str
    pipeline: PipelineSpec
    chunking: ChunkingSpec = ChunkingSpec()
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
    hits: list[list[SearchHit]]
    timings_s: dict[str, float]


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

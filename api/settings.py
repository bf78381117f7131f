"""Service settings: one typed object, built at start-up (``cascade serve`` or a test) and
passed to :func:`api.app.create_app`. Nothing here reads the environment."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cascade.api.service.config import NAME_PATTERN
from cascade.rerank.registry import RERANKERS
from cascade.retrieval.models import DEFAULT_DENSE_MODEL


def _check_checkpoint(checkpoint: str) -> str:
    """A checkpoint written as a path (``/``, ``./``, ``../``, ``~``) must be a directory; a hub id
    is left to load time (it may be cached, or fetched by a user with a network)."""
    if not checkpoint.strip():
        raise ValueError("empty checkpoint")
    if checkpoint.startswith(("/", "./", "../", "~")) and not Path(checkpoint).expanduser().is_dir():
        raise ValueError(f"checkpoint {checkpoint!r} is not a directory")
    return checkpoint


class RerankerModel(BaseModel):
    """A served reranker: a family of :data:`cascade.rerank.registry.RERANKERS` and the checkpoint
    it loads (its ``model`` argument)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    checkpoint: str

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        if v not in RERANKERS:
            raise ValueError(f"unknown reranker family {v!r}; families: {', '.join(RERANKERS.names())}")
        return v

    @field_validator("checkpoint")
    @classmethod
    def _local_checkpoint(cls, v: str) -> str:
        return _check_checkpoint(v)


class Settings(BaseModel):
    """Attributes:
    data_dir: where collections live.
    api_keys: key -> collection names it may use (``["*"]``: all). ``None``: no auth.
    max_request_bytes: larger request bodies get 413.
    max_documents_per_request: documents in one ingest request.
    max_k ... max_context_tokens: per-request caps (:mod:`api.limits`); max_queued,
        request_timeout_s: the bounded queue and the time limit of searches and model calls
        (:mod:`api.concurrency`).
    threads: CPU threads of torch, numba and faiss in this process, set when the app is created
        (:func:`cascade.retrieval.threads.set_threads`); ``cascade serve`` passes ``--threads``,
        by default all cores the process may use. ``None``: left as they are.
    llm_base_url, llm_api_key, llm_model: an OpenAI-compatible chat-completions server for
        ``/v1/answer`` (``llm_base_url`` ends before ``/chat/completions``, e.g. ``.../v1``).
    indexes, index_pipeline: index directories served as read-only collections, and the preset
        they search with when a request names none.
    rerankers, embedders, sparse_embedders: served models by alias (``cascade serve --reranker
        ALIAS=FAMILY:CHECKPOINT``, ``--embedder ALIAS=CHECKPOINT``, ``--sparse-embedder
        ALIAS=CHECKPOINT``); requests name the alias or the checkpoint. Aliases are unique across
        the three. ``embedding_models`` and the reranker families (with ``reranker_params``) stay
        accepted as before.
    """

    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    api_keys: dict[str, list[str]] | None = None
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_documents_per_request: int = Field(20_000, ge=1)
    # per-request caps (one request must not hold the server): over them a request gets a 422,
    # or a 413 for sizes; the request schemas' own limits stay the outer bound
    max_k: int = Field(1000, ge=1, le=1000, description="hits per query a search may ask for")
    max_depth: int = Field(10_000, ge=1, le=100_000, description="candidates a request's retriever stage may take")
    max_queries: int = Field(256, ge=1, le=256, description="queries in one search request")
    max_document_bytes: int = Field(
        5_000_000, ge=1, description="UTF-8 bytes of one ingested document (text and title); more: 413"
    )
    max_rerank_candidates: int = Field(
        1000, ge=1, description="documents one rerank call, or a request's rerank stage, scores"
    )
    max_context_tokens: int = Field(128_000, ge=16, description="the largest RAG context budget a request may ask for")
    max_queued: int = Field(
        64, ge=0, description="searches and model calls waiting for a worker; one more gets 503 with Retry-After"
    )
    request_timeout_s: float = Field(60.0, gt=0, description="a search or model call running longer gets 504")
    search_threads: int = Field(4, ge=1, le=256, description="searches and model calls run at once")
    threads: int | None = Field(
        None, ge=1, description="CPU threads torch, numba and faiss use (None: leave them as they are)"
    )
    embedding_models: list[str] = [DEFAULT_DENSE_MODEL]
    tokenizer_models: list[str] = [DEFAULT_DENSE_MODEL]
    reranker_params: dict[str, dict] = {}
    background_compaction: bool = True
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str | None = None
    llm_timeout_s: float = Field(60.0, gt=0)
    indexes: dict[str, Path] = Field({}, description="read-only collections: name -> `cascade index` directory")
    index_pipeline: str = Field("bm25", description="preset the read-only collections search by default")
    rerankers: dict[str, RerankerModel] = Field({}, description="served rerankers: alias -> family and checkpoint")
    embedders: dict[str, str] = Field({}, description="served dense embedders: alias -> checkpoint")
    sparse_embedders: dict[str, str] = Field({}, description="served SPLADE (masked-LM) embedders: alias -> checkpoint")

    @field_validator("embedders", "sparse_embedders")
    @classmethod
    def _checkpoints(cls, v: dict[str, str]) -> dict[str, str]:
        for alias, checkpoint in v.items():
            try:
                _check_checkpoint(checkpoint)
            except ValueError as e:
                raise ValueError(f"model alias {alias!r}: {e}") from None
        return v

    @model_validator(mode="after")
    def _aliases(self) -> Settings:
        seen: set[str] = set()
        for alias in [*self.rerankers, *self.embedders, *self.sparse_embedders]:
            if not re.match(NAME_PATTERN, alias):
                raise ValueError(f"model alias {alias!r}: use letters, digits, '_', '.', '-' (at most 64)")
            if alias in seen:
                raise ValueError(f"model alias {alias!r} is given twice (aliases are unique across model kinds)")
            seen.add(alias)
        return self

    @field_validator("api_keys")
    @classmethod
    def _keys_nonempty(cls, v):
        if v is not None:
            for key, scopes in v.items():
                if len(key) < 8:
                    raise ValueError("API keys must be at least 8 characters")
                if not scopes:
                    raise ValueError(f"API key ...{key[-4:]} has no collections (use ['*'] for all)")
        return v

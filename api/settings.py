"""Service settings: one typed object, built at start-up (``cascade serve`` or a test) and
passed to :func:`api.app.create_app`. Nothing here reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cascade.retrieval.models import DEFAULT_DENSE_MODEL


class Settings(BaseModel):
    """Attributes:
    data_dir: where collections live.
    api_keys: key -> collection names it may use (``["*"]``: all). ``None``: no auth.
    max_request_bytes: larger request bodies get 413.
    max_documents_per_request: documents in one ingest request.
    llm_base_url, llm_api_key, llm_model: an OpenAI-compatible chat-completions server for
        ``/v1/answer`` (``llm_base_url`` ends before ``/chat/completions``, e.g. ``.../v1``).
    indexes, index_pipeline: index directories served as read-only collections, and the preset
        they search with when a request names none.
    """

    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    api_keys: dict[str, list[str]] | None = None
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_documents_per_request: int = Field(20_000, ge=1)
    search_threads: int = Field(4, ge=1, le=256, description="searches and model calls run at once")
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

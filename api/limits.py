"""Per-request caps that protect the server (:class:`api.settings.Settings`): one request may not
ask for more hits, candidates, queries, document bytes or context tokens than the operator
allows. Sizes are answered 413 (:class:`PayloadTooLarge`), the rest 422 (:class:`InvalidInput`),
each naming the field, the value and the limit. The queue and time limits are in
:mod:`api.concurrency`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request

from cascade.eval.presets import resolve_pipeline
from cascade.retrieval.errors import InvalidInput, PayloadTooLarge
from cascade.retrieval.pipeline import PipelineSpec
from cascade.retrieval.types import Document

from .settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def check_search(
    request: Request, k: int, num_queries: int, pipeline: str | Mapping[str, Any] | PipelineSpec | None
) -> None:
    """``k``, the number of queries, and the depths of a pipeline the request gives (a
    collection's own pipeline, set when it was made, is the operator's choice and not capped).

    Raises: InvalidInput (422) naming the cap.
    """
    s = _settings(request)
    if k > s.max_k:
        raise InvalidInput(f"k={k} is over this server's limit of {s.max_k} hits per query")
    if num_queries > s.max_queries:
        raise InvalidInput(f"{num_queries} queries in one request; this server's limit is {s.max_queries}")
    if pipeline is None or isinstance(pipeline, str):  # a preset: the operator's own depths
        return
    spec = resolve_pipeline(pipeline, allow_files=False)
    for stage in spec.retrievers:
        if stage.depth > s.max_depth:
            raise InvalidInput(
                f"retriever {stage.retriever!r} depth {stage.depth} is over this server's limit of {s.max_depth}"
            )
    for stage in spec.rerankers:
        check_rerank(request, stage.depth, f"reranker {stage.reranker!r} depth")


def check_rerank(request: Request, candidates: int, what: str = "documents to rerank") -> None:
    """Raises: InvalidInput (422) over ``max_rerank_candidates``."""
    limit = _settings(request).max_rerank_candidates
    if candidates > limit:
        raise InvalidInput(f"{what} {candidates} is over this server's limit of {limit} rerank candidates")


def check_context(request: Request, max_tokens: int) -> None:
    """Raises: InvalidInput (422) over ``max_context_tokens``."""
    limit = _settings(request).max_context_tokens
    if max_tokens > limit:
        raise InvalidInput(f"max_tokens={max_tokens} is over this server's context limit of {limit} tokens")


def check_documents(request: Request, docs: Sequence[Document]) -> None:
    """The ingest batch size and each document's size.

    Raises: PayloadTooLarge (413) naming the document.
    """
    s = _settings(request)
    if len(docs) > s.max_documents_per_request:
        raise PayloadTooLarge(
            f"{len(docs)} documents in one request; the limit is {s.max_documents_per_request}"
        )
    for d in docs:
        size = len(d.text.encode("utf-8")) + len(d.title.encode("utf-8"))
        if size > s.max_document_bytes:
            raise PayloadTooLarge(
                f"document {d.id!r} is {size} bytes; this server's limit is {s.max_document_bytes} bytes a document"
            )

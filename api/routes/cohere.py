"""Cohere's rerank and embed APIs: ``POST /v1/rerank`` (v1 shape), ``POST /v2/rerank`` and
``POST /v2/embed``, so ``cohere.Client`` / ``cohere.ClientV2`` (``base_url`` = the server) work."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from cascade.api.auth import Caller
from cascade.api.concurrency import run_search
from cascade.api.limits import check_rerank
from cascade.api.schemas_models import (
    CohereEmbeddings,
    CohereEmbedIn,
    CohereEmbedOut,
    RerankIn,
    RerankOut,
    RerankResult,
)
from cascade.api.service.models import quantize

router = APIRouter(tags=["cohere"])

#: Cohere's input types -> the encoder's prompt side
_SIDE = {
    "search_query": "query",
    "search_document": "document",
    "classification": "document",
    "clustering": "document",
}


async def _rerank(body: RerankIn, request: Request, meta: dict) -> RerankOut:
    engine = request.app.state.engine
    check_rerank(request, len(body.documents))
    ranked = await run_search(
        request,
        lambda: engine.rerank(body.model, body.query, body.texts(), body.top_n, body.max_tokens_per_doc),
    )
    results = [
        RerankResult(index=i, relevance_score=s, document=body.returned(i) if body.return_documents else None)
        for i, s in ranked
    ]
    return RerankOut(id=str(uuid.uuid4()), results=results, meta=meta)


@router.post("/v1/rerank", response_model=RerankOut, response_model_exclude_none=True)
async def rerank_v1(body: RerankIn, request: Request, who: Caller):
    """``model``: a served reranker (alias or checkpoint) or a reranker family
    (:mod:`cascade.rerank.registry`); default: the first served. Results are best first."""
    meta = {**({"model": body.model} if body.model else {}), "api_version": {"version": "1"}}
    return await _rerank(body, request, meta)


@router.post("/v2/rerank", response_model=RerankOut, response_model_exclude_none=True)
async def rerank_v2(body: RerankIn, request: Request, who: Caller):
    meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    return await _rerank(body, request, meta)


@router.post("/v2/embed", response_model=CohereEmbedOut, response_model_exclude_none=True)
async def embed_v2(body: CohereEmbedIn, request: Request, who: Caller):
    """``embedding_types``: float, int8 (symmetric scale per vector), uint8, binary, ubinary
    (sign bits, 8 dimensions a byte), base64; see :func:`cascade.api.service.models.quantize`."""
    engine = request.app.state.engine
    out = await run_search(
        request,
        lambda: engine.embed_texts(
            body.model, body.texts, side=_SIDE.get(body.input_type or ""), dimensions=body.output_dimension,
            truncate=body.truncate != "NONE", max_tokens=body.max_tokens,
        ),
    )  # fmt: skip
    embeddings = {("float_" if t == "float" else t): quantize(out.vectors, t) for t in body.embedding_types}
    return CohereEmbedOut(
        id=str(uuid.uuid4()),
        embeddings=CohereEmbeddings(**embeddings),
        texts=body.texts,
        meta={"api_version": {"version": "2"}, "billed_units": {"input_tokens": out.tokens}},
    )

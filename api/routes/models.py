"""Model endpoints with the wire formats clients already speak: ``POST /v1/rerank``
(Cohere) and ``POST /v1/embeddings`` (OpenAI)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from cascade.api.auth import Caller
from cascade.api.concurrency import run_search
from cascade.api.schemas import (
    Embedding,
    EmbeddingsIn,
    EmbeddingsOut,
    RerankDoc,
    RerankIn,
    RerankOut,
    RerankResult,
)

router = APIRouter(prefix="/v1", tags=["models"])


@router.post("/rerank", response_model=RerankOut, response_model_exclude_none=True)
async def rerank(body: RerankIn, request: Request, who: Caller):
    """``model`` names a reranker of the reranker registry (:mod:`cascade.rerank.registry`); results are best first."""
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    ranked = await run_search(
        request, request.app.state.engine.rerank, body.model, body.query, texts, body.top_n
    )
    results = [
        RerankResult(
            index=i, relevance_score=s, document=RerankDoc(text=texts[i]) if body.return_documents else None
        )
        for i, s in ranked
    ]
    return RerankOut(id=str(uuid.uuid4()), results=results, meta={"model": body.model})


@router.post("/embeddings", response_model=EmbeddingsOut)
async def embeddings(body: EmbeddingsIn, request: Request, who: Caller):
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors = await run_search(request, request.app.state.engine.embed, body.model, texts)
    tokens = sum(len(t.split()) for t in texts)  # whitespace words: the usage figure is advisory
    return EmbeddingsOut(
        data=[Embedding(index=i, embedding=v.tolist()) for i, v in enumerate(vectors)],
        model=body.model,
        usage={"prompt_tokens": tokens, "total_tokens": tokens},
    )

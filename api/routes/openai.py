"""OpenAI's embeddings API: ``POST /v1/embeddings`` and ``GET /v1/models``, so the ``openai``
client (``OpenAI(base_url=".../v1").embeddings.create(...)``) works unchanged."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from cascade.api.auth import Caller
from cascade.api.concurrency import run_search
from cascade.api.schemas_models import (
    Embedding,
    EmbeddingsIn,
    EmbeddingsOut,
    EmbeddingsUsage,
    ModelCard,
    ModelList,
)
from cascade.api.service.models import ServedModel, base64_floats

router = APIRouter(prefix="/v1", tags=["openai"])

_STARTED = int(time.time())


def _card(m: ServedModel) -> ModelCard:
    return ModelCard(id=m.id, created=_STARTED, type=m.kind, root=m.checkpoint, family=m.family)


@router.post("/embeddings", response_model=EmbeddingsOut)
async def embeddings(body: EmbeddingsIn, request: Request, who: Caller):
    """``model``: a served embedder (alias or checkpoint). ``dimensions`` keeps the first
    coordinates (re-normalized when the model normalizes); ``usage`` counts the model's tokens."""
    engine = request.app.state.engine
    out = await run_search(
        request, lambda: engine.embed_texts(body.model, body.input, dimensions=body.dimensions)
    )
    encode = base64_floats if body.encoding_format == "base64" else lambda v: v.tolist()
    return EmbeddingsOut(
        data=[Embedding(index=i, embedding=encode(v)) for i, v in enumerate(out.vectors)],
        model=body.model,
        usage=EmbeddingsUsage(prompt_tokens=out.tokens, total_tokens=out.tokens),
    )


@router.get("/models", response_model=ModelList, response_model_exclude_none=True)
async def models(request: Request, who: Caller):
    """The served embedding, sparse-embedding and reranking models."""
    return ModelList(data=[_card(m) for m in request.app.state.engine.served_models()])


@router.get("/models/{model:path}", response_model=ModelCard, response_model_exclude_none=True)
async def model(model: str, request: Request, who: Caller):
    return _card(request.app.state.engine.served_model(model))

"""Hugging Face Text Embeddings Inference's API: ``POST /embed``, ``/embed_sparse``, ``/rerank``,
``/similarity``, ``GET /info``, and ``POST /`` (where ``huggingface_hub.InferenceClient(base_url)``
sends ``feature_extraction`` and ``sentence_similarity``). TEI serves one model; here a body may
name a served alias in ``model``, and without it the first served embedder (sparse embedder,
reranker) answers."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cascade.api.auth import Caller
from cascade.api.concurrency import run_search
from cascade.api.limits import check_rerank
from cascade.api.schemas_models import (
    SparseValue,
    TeiClassifyIn,
    TeiEmbedIn,
    TeiInfo,
    TeiRank,
    TeiRerankIn,
    TeiRootIn,
    TeiSimilarityIn,
    TeiSparseIn,
)
from cascade.retrieval.errors import InvalidInput

router = APIRouter(tags=["tei"])


def _check_direction(direction: str) -> None:
    if direction.lower() != "right":
        raise InvalidInput("truncation_direction 'Left' is not supported; inputs are cut at the end (Right)")


@router.post("/embed", response_model=list[list[float]])
async def embed(body: TeiEmbedIn, request: Request, who: Caller):
    _check_direction(body.truncation_direction)
    engine = request.app.state.engine
    out = await run_search(
        request,
        lambda: engine.embed_texts(
            body.model, body.inputs, prompt_name=body.prompt_name, dimensions=body.dimensions,
            normalize=body.normalize, truncate=body.truncate is not False,
        ),
    )  # fmt: skip
    return out.vectors.tolist()


@router.post("/embed_sparse", response_model=list[list[SparseValue]])
async def embed_sparse(body: TeiSparseIn, request: Request, who: Caller):
    """SPLADE vectors of a ``--sparse-embedder`` model: the non-zero vocabulary ids, ascending."""
    _check_direction(body.truncation_direction)
    engine = request.app.state.engine
    rows = await run_search(
        request, lambda: engine.embed_sparse(body.model, body.inputs, body.truncate is not False)
    )
    return [
        [SparseValue(index=int(i), value=float(v)) for i, v in zip(idx, val, strict=True)]
        for idx, val in rows
    ]


@router.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True)
async def rerank(body: TeiRerankIn, request: Request, who: Caller):
    """``[{"index", "score", "text"?}]``, best first."""
    engine = request.app.state.engine
    check_rerank(request, len(body.texts))
    ranked = await run_search(request, lambda: engine.rerank(body.model, body.query, body.texts))
    return [TeiRank(index=i, score=s, text=body.texts[i] if body.return_text else None) for i, s in ranked]


@router.post("/similarity", response_model=list[float])
async def similarity(body: TeiSimilarityIn, request: Request, who: Caller):
    """Cosine similarity of ``inputs.source_sentence`` to each of ``inputs.sentences``."""
    engine = request.app.state.engine
    prompt = (body.parameters or {}).get("prompt_name")
    return await run_search(
        request,
        lambda: engine.similarity(body.model, body.inputs.source_sentence, body.inputs.sentences, prompt),
    )


@router.post(
    "/", response_model=list[list[float]] | list[float] | list[TeiRank], response_model_exclude_none=True
)
async def root(body: TeiRootIn, request: Request, who: Caller):
    """TEI's root route: embeddings (``{"inputs": ...}``), similarity (``{"inputs":
    {"source_sentence", "sentences"}}``) or reranking (``{"query", "texts"}``), by the body."""
    if isinstance(body, TeiClassifyIn):
        raise InvalidInput(
            "text classification is not served: Cascade serves embedders and rerankers; use "
            "feature_extraction / sentence_similarity, or POST /rerank with a query and texts"
        )
    if isinstance(body, TeiRerankIn):
        return await rerank(body, request, who)
    if isinstance(body, TeiSimilarityIn):
        return await similarity(body, request, who)
    return await embed(body, request, who)


@router.get("/info", response_model=TeiInfo)
async def info(request: Request, who: Caller):
    """The default model (the first served embedder, else reranker), as TEI describes its one model."""
    engine = request.app.state.engine
    m = await run_search(request, engine.model_info)
    model_type = (
        {"embedding": {"pooling": m.get("pooling") or "mean"}}
        if m["kind"] == "embedding"
        else {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    )
    return TeiInfo(
        model_id=m["checkpoint"],
        model_type=model_type,
        max_concurrent_requests=request.app.state.settings.search_threads,
        max_input_length=m.get("max_input_length"),
        version=request.app.version,
    )

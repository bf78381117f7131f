"""``POST /v1/search``: one or many queries against a collection, with a pipeline."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cascade.api.auth import Caller
from cascade.api.concurrency import run_search
from cascade.api.schemas import HitOut, QueryResult, SearchIn, SearchOut
from cascade.api.service.prefetch import compile_prefetch

router = APIRouter(prefix="/v1", tags=["search"])


def _hit(h, fields: set[str]) -> HitOut:
    doc = h.document
    out = HitOut(id=h.id, doc_id=h.doc_id, score=h.score)
    if doc is not None:
        if "title" in fields:
            out.title = doc.title
        if "text" in fields:
            out.text = doc.text
        if "metadata" in fields:
            out.metadata = dict(doc.metadata)
    return out


@router.post("/search", response_model=SearchOut, response_model_exclude_none=True)
async def search(body: SearchIn, request: Request, who: Caller):
    """One or many queries with a pipeline (a preset or a spec), or a Qdrant-style hybrid query
    (``prefetch``: retrievers, fusion, rerank stages; see :mod:`cascade.api.service.prefetch`)."""
    who.check(body.collection)
    engine = request.app.state.engine
    fields = set(body.fields)
    pipeline, k, stage_where = body.pipeline, body.k, None
    if body.prefetch is not None:
        plan = compile_prefetch(body.prefetch, body.query, body.k, engine.collection(body.collection).pipeline)
        texts, pipeline, k, stage_where = plan.texts, plan.spec, plan.k, plan.stage_where
    else:
        texts = [body.query] if isinstance(body.query, str) else body.query
    spec, out = await run_search(
        request, engine.search, body.collection, texts, pipeline, k, body.filter, bool(fields), stage_where
    )
    request.app.state.metrics.observe_stages(out.timings_s)
    # per stage, and "total": the pipeline's own time (what the API adds is the rest)
    timings = {k: round(v * 1000, 3) for k, v in out.timings_s.items()}
    results = [
        QueryResult(query=q, hits=[_hit(h, fields) for h in hits])
        for q, hits in zip(texts, out.hits, strict=True)
    ]
    out = SearchOut(collection=body.collection, pipeline=spec.name, results=results, timings_ms=timings)
    # serialized once here: FastAPI would validate the model a second time against response_model
    return Response(out.model_dump_json(exclude_none=True), media_type="application/json")

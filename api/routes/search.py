"""``POST /v1/search``: one or many queries against a collection, with a pipeline."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from cascade.api.auth import Caller
from cascade.api.batching import batched_search
from cascade.api.concurrency import run_search
from cascade.api.limits import check_search
from cascade.api.schemas import HitOut, QueryResult, SearchIn, SearchOut
from cascade.api.service.prefetch import compile_prefetch
from cascade.retrieval.pipeline import PipelineOutput

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


def _plain_hit(h, fields: set[str]) -> dict:
    """:func:`_hit` as the plain dict ``HitOut.model_dump(exclude_none=True)`` gives."""
    out = {"id": h.id, "doc_id": h.doc_id, "score": float(h.score)}
    doc = h.document
    if doc is not None:
        if "title" in fields and doc.title is not None:
            out["title"] = doc.title
        if "text" in fields and doc.text is not None:
            out["text"] = doc.text
        if "metadata" in fields:
            out["metadata"] = dict(doc.metadata)
    return out


def _explain(trace: PipelineOutput, results: list[QueryResult]) -> list[str]:
    """Set each hit's rank per stage (``explain``); the stage names, in pipeline order."""
    for i, result in enumerate(results):
        for hit, ranks in zip(result.hits, trace.stage_ranks(i, [h.id for h in result.hits]), strict=True):
            hit.ranks = ranks
    return [name for name, _ in trace.stages]


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
    check_search(request, k, len(texts), pipeline)
    if body.prefetch is None and not body.explain:  # together with concurrent searches of its kind
        spec, out = await batched_search(request, body.collection, texts, pipeline, k, body.filter, bool(fields))
    else:
        spec, out = await run_search(
            request, engine.search, body.collection, texts, pipeline, k, body.filter, bool(fields), stage_where,
            body.explain,
        )  # fmt: skip
    request.app.state.metrics.observe_stages(out.timings_s)
    # per stage, and "total": the pipeline's own time (what the API adds is the rest)
    timings = {k: round(v * 1000, 3) for k, v in out.timings_s.items()}
    if out.trace is None:
        # plain values straight to JSON, the bytes SearchOut.model_dump_json(exclude_none=True)
        # would give: building ten HitOut models per query cost 3x the encoding itself
        plain = [
            {"query": q, "hits": [_plain_hit(h, fields) for h in hits]} for q, hits in zip(texts, out.hits, strict=True)
        ]
        answer = {"collection": body.collection, "pipeline": spec.name, "results": plain, "timings_ms": timings}
        return Response(to_json(answer), media_type="application/json")
    results = [
        QueryResult(query=q, hits=[_hit(h, fields) for h in hits])
        for q, hits in zip(texts, out.hits, strict=True)
    ]
    stages = _explain(out.trace, results) if out.trace is not None else None
    out = SearchOut(
        collection=body.collection, pipeline=spec.name, results=results, timings_ms=timings, stages=stages
    )
    # serialized once here: FastAPI would validate the model a second time against response_model
    return Response(out.model_dump_json(exclude_none=True), media_type="application/json")

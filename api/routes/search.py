"""``POST /v1/search``: one or many queries against a collection, with a pipeline."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ..auth import Caller
from ..schemas import HitOut, QueryResult, SearchIn, SearchOut

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
    who.check(body.collection)
    texts = [body.query] if isinstance(body.query, str) else body.query
    fields = set(body.fields)
    t = time.perf_counter()
    spec, out = await run_in_threadpool(
        request.app.state.engine.search,
        body.collection,
        texts,
        body.pipeline,
        body.k,
        body.filter,
        bool(fields),
    )
    total = time.perf_counter() - t
    request.app.state.metrics.observe_stages(out.timings_s)
    timings = {k: round(v * 1000, 3) for k, v in out.timings_s.items()}
    timings["pipeline"] = round(total * 1000, 3)
    results = [
        QueryResult(query=q, hits=[_hit(h, fields) for h in hits])
        for q, hits in zip(texts, out.hits, strict=True)
    ]
    return SearchOut(collection=body.collection, pipeline=spec.name, results=results, timings_ms=timings)

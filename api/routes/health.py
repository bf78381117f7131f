"""Liveness, readiness and Prometheus metrics (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from cascade.retrieval.threads import library_threads

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez():
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, response: Response):
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        response.status_code = 503
        return {"status": "starting"}
    state = request.app.state
    return {
        "status": "ready",
        "collections": len(engine.collection_names()),
        # CPU threads (``--threads``) and what the libraries loaded so far run on; null: not set
        "threads": state.settings.threads,
        "library_threads": library_threads() if state.settings.threads is not None else None,
    }


# declared as text/plain: the OpenAPI document says what the route really sends
@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request):
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

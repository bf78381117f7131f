"""Liveness, readiness and Prometheus metrics (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

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
    return {"status": "ready", "collections": len(engine.collection_names())}


# declared as text/plain: the OpenAPI document says what the route really sends
@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request):
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

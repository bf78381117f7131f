"""The search console: a static page at ``/`` (``api/static/``: HTML, CSS and plain JavaScript,
no build step, nothing fetched from elsewhere) that drives the REST API from the browser, and
``GET /v1/presets``, the pipeline presets it offers."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from cascade.api.auth import Caller
from cascade.eval.presets import presets
from cascade.retrieval.errors import NotFound

STATIC = Path(__file__).resolve().parent.parent / "static"
#: the files the page loads, with their types; nothing else under static/ is served
_FILES = {"app.js": "text/javascript", "app.css": "text/css"}

router = APIRouter(tags=["console"])


@router.get("/", include_in_schema=False)
async def console() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"cache-control": "no-cache"})


@router.get("/console/{name}", include_in_schema=False)
async def console_file(name: str) -> FileResponse:
    if name not in _FILES:
        raise NotFound(f"no console file {name!r}")
    return FileResponse(STATIC / name, media_type=_FILES[name], headers={"cache-control": "no-cache"})


@router.get("/v1/presets")
async def list_presets(who: Caller) -> dict:
    """The pipeline presets by name, each with its spec (what ``"pipeline": NAME`` runs)."""
    return {"presets": {name: {"name": name, **spec} for name, spec in presets().items()}}

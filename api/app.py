"""The REST API: :func:`create_app` builds a FastAPI app over an :class:`Engine`.

Example:
    >>> app = create_app(Settings(data_dir="/tmp/cascade"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)        # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from indexing.engine import Engine

from . import errors
from .metrics import Metrics
from .middleware import ServiceMiddleware
from .routes import collections, health, models, rag, search
from .schemas import ErrorOut
from .settings import Settings


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """Args:
    settings: the service settings.
    engine: an engine to serve (default: one over ``settings.data_dir``, closed on shutdown).
    """
    owned = engine is None
    engine = engine or Engine(
        settings.data_dir,
        reranker_params=settings.reranker_params,
        embedding_models=settings.embedding_models,
        tokenizer_models=settings.tokenizer_models,
        background_compaction=settings.background_compaction,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if owned:
            engine.close()

    app = FastAPI(
        title="Cascade",
        version="0.1.0",
        description="Retrieval and reranking: collections, search pipelines, rerank, embeddings, RAG context.",
        lifespan=lifespan,
        responses={code: {"model": ErrorOut} for code in (401, 403, 404, 409, 413, 422, 500, 501, 503)},
    )
    metrics = Metrics()
    app.state.settings, app.state.engine, app.state.metrics = settings, engine, metrics
    errors.install(app)
    for module in (health, collections, search, models, rag):
        app.include_router(module.router)
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body=settings.max_request_bytes)
    return app

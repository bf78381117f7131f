"""The REST API: :func:`create_app` builds a FastAPI app over an :class:`Engine`.

Example:
    >>> app = create_app(Settings(data_dir="/tmp/cascade"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cascade.api.service.engine import Engine
from cascade.api.service.index_collection import IndexCollection, IndexOpener
from cascade.eval.presets import resolve_pipeline
from cascade.retrieval.threads import set_threads

from . import errors
from .metrics import Metrics
from .middleware import ServiceMiddleware
from .routes import cohere, collections, console, health, openai, rag, search, tei
from .schemas import ErrorOut
from .settings import Settings


def build_engine(
    settings: Settings, open_index: IndexOpener | None = None, reranker_factory: Callable | None = None
) -> Engine:
    """The engine the settings describe: the data directory's collections plus the read-only
    ``settings.indexes``.

    Args:
        open_index: how read-only indexes are opened (default: loaded in this process).
        reranker_factory: how rerankers are built (default: loaded in this process).

    Raises:
        NotFound, IndexMismatch: an index directory that is missing or lacks the default pipeline.
    """
    engine = Engine(
        settings.data_dir,
        reranker_params=settings.reranker_params,
        embedding_models=settings.embedding_models,
        tokenizer_models=settings.tokenizer_models,
        background_compaction=settings.background_compaction,
        reranker_factory=reranker_factory,
        rerankers={alias: (m.family, m.checkpoint) for alias, m in settings.rerankers.items()},
        embedders=settings.embedders,
        sparse_embedders=settings.sparse_embedders,
    )
    try:
        if settings.indexes:
            spec = resolve_pipeline(settings.index_pipeline)
            for name, root in settings.indexes.items():
                engine.attach(name, IndexCollection(name, root, spec, open_index))
    except BaseException:
        engine.close()
        raise
    return engine


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """Args:
    settings: the service settings.
    engine: an engine to serve (default: :func:`build_engine`'s, closed on shutdown).
    """
    # threads before the engine: loading models and indexes already runs on them
    library_threads = set_threads(settings.threads) if settings.threads is not None else None  # loaded so far
    owned = engine is None
    engine = engine or build_engine(settings)

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
        responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 500, 501, 503, 504)},
    )
    metrics = Metrics()
    app.state.settings, app.state.engine, app.state.metrics = settings, engine, metrics
    app.state.library_threads = library_threads
    errors.install(app)
    # search first: a request is matched against the routes in order, and /v1/search is the hot one
    for module in (search, health, collections, openai, cohere, tei, rag, console):
        app.include_router(module.router)
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body=settings.max_request_bytes)
    return app

"""``cascade serve --ray``: the REST API on a Ray Serve cluster.

Three deployments::

    Router          the same FastAPI app as the single-process server (routes, errors, auth,
                    metrics), over an engine whose read-only collections search through...
    ShardSearcher   one per shard of each index of ``Settings.indexes``: loads its shard once
                    (memory-mapped), scored with the whole index's statistics (BM25 idf), and
                    answers batch searches with each query's top k
    Reranker        loads rerankers by registry name and scores (query, document) candidates;
                    on a GPU when the cluster has one

The router fans a batch of queries out to every shard of an index at once and merges their
top k with :func:`retrieval.partition.merge_rankings`, the function the in-process
:class:`~retrieval.sharded.ShardedRetriever` uses, so both answer exactly alike; fusion runs in
the router, reranking on the Reranker replicas. Collections of ``--data-dir`` stay writable and
live in the router process (one replica: a collection directory has one owner).

Example::

    ray start --head
    cascade serve --ray --ray-address auto --index scifact=idx/ --shard-replicas 2
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cascade.api.service.index_collection import index_dirs, index_shards, load_index
from cascade.rerank.base import Reranker
from cascade.rerank.registry import load_reranker
from cascade.retrieval.errors import CascadeError, InvalidInput, require
from cascade.retrieval.partition import merge_rankings, merge_stats, part_stats, search_part
from cascade.retrieval.types import Document, Query, Ranking

from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayServeConfig:
    """Attributes:
    shard_replicas: replicas of each shard searcher (throughput and availability).
    reranker_replicas: replicas of the reranker deployment.
    reranker_gpus: GPUs per reranker replica; ``None``: 1 when the cluster has a GPU, else 0.
    replica_cpus: CPUs Ray reserves per replica (fractions share a core).
    """

    shard_replicas: int = 1
    reranker_replicas: int = 1
    reranker_gpus: float | None = None
    replica_cpus: float = 1.0

    def __post_init__(self):
        if self.shard_replicas < 1 or self.reranker_replicas < 1:
            raise InvalidInput("--shard-replicas and --reranker-replicas must be >= 1")
        if self.replica_cpus <= 0 or (self.reranker_gpus is not None and self.reranker_gpus < 0):
            raise InvalidInput("--replica-cpus must be > 0 and --reranker-gpus >= 0")


# -- replicas ------------------------------------------------------------------------------


class ShardSearcher:
    """One shard directory, loaded once, scored with the whole index's ``stats`` when given."""

    def __init__(self, path: str, stats: Any | None = None):
        self.index, self.stats = load_index(path), stats

    def search(self, queries: list[Query], k: int, kwargs: dict[str, Any]) -> list[Ranking]:
        return search_part(self.index, queries, k, self.stats, **kwargs)


class RerankerReplica:
    """Rerankers by registry name and parameters, each loaded once per replica."""

    def __init__(self):
        self._models: dict[str, Reranker] = {}
        self._lock = threading.Lock()

    def score_many(
        self, name: str, params: dict[str, Any], queries: list[str], docs: list[list[Document]]
    ) -> list[np.ndarray]:
        key = json.dumps([name, params], sort_keys=True, default=str)
        with self._lock:
            if key not in self._models:
                self._models[key] = load_reranker(name, params)
        return self._models[key].score_many(queries, docs)


def _shard_stats(path: str) -> Any | None:
    """A Ray task: one shard's collection statistics (the router merges them)."""
    return part_stats(load_index(path))


# -- the router's side of the handles -----------------------------------------------------


def _result(response: Any) -> Any:
    """A replica's answer; the project's own errors come back as themselves (a 4xx, not a 500)."""
    from ray.exceptions import RayTaskError

    try:
        return response.result()
    except RayTaskError as e:
        if isinstance(e.cause, CascadeError):
            raise e.cause from None
        raise


class RemoteShards:
    """A retriever whose shards are ShardSearcher deployments: every shard searches the batch
    at once, and their top k are merged exactly as one index would rank."""

    def __init__(self, handles: Sequence[Any]):
        self.handles = list(handles)

    def search(self, queries: Sequence[Query], k: int = 10, **kwargs: Any) -> list[Ranking]:
        batch = list(queries)
        responses = [h.search.remote(batch, k, kwargs) for h in self.handles]
        return merge_rankings(batch, [_result(r) for r in responses], k)


class RemoteReranker(Reranker):
    """A reranker that scores on the Reranker deployment; sorting stays in the base class."""

    def __init__(self, handle: Any, name: str, params: dict[str, Any]):
        self.handle, self.name, self.params = handle, name, dict(params)

    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        return self.score_many([query], [docs])[0]

    def score_many(self, queries: Sequence[str], docs: Sequence[Sequence[Document]]) -> list[np.ndarray]:
        response = self.handle.score_many.remote(self.name, self.params, list(queries), [list(d) for d in docs])
        return _result(response)


class Router:
    """The ingress: :func:`api.app.create_app` over an engine whose read-only indexes and
    rerankers are the deployments behind ``shards`` (index directory -> shard handles) and
    ``reranker``."""

    def __init__(self, settings: Settings, shards: dict[str, list[Any]], reranker: Any):
        from .app import build_engine

        self.settings = settings
        self.engine = build_engine(
            settings,
            open_index=lambda path: RemoteShards(shards[str(path)]),
            reranker_factory=lambda name, params: RemoteReranker(reranker, name, params),
        )

    def __serve_build_asgi_app__(self):  # Ray Serve builds the ingress app here, on the replica
        from .app import create_app

        return create_app(self.settings, self.engine)


# -- building and running ------------------------------------------------------------------


def build_app(settings: Settings, config: RayServeConfig = RayServeConfig()) -> Any:
    """The Serve application (bind it with ``serve.run``) for ``settings`` on the connected
    Ray cluster. Shard directories are checked here (a missing or foreign shard fails before
    any replica starts), and the statistics of each sharded index are merged from its shards.

    Raises:
        MissingDependency: Ray Serve is not installed; NotFound / IndexMismatch: a bad index.
    """
    ray = require("ray", "ray")
    serve = require("ray.serve", "ray")
    cpus = {"num_cpus": config.replica_cpus}
    stats_task = ray.remote(num_cpus=config.replica_cpus)(_shard_stats)
    shards: dict[str, list[Any]] = {}
    for name, root in settings.indexes.items():
        for index in index_dirs(root):
            paths = index_shards(index)
            stats = merge_stats(ray.get([stats_task.remote(str(p)) for p in paths])) if len(paths) > 1 else None
            shards[str(index)] = [
                serve.deployment(ShardSearcher)
                .options(name=f"{name}.{index.name}.{i}", num_replicas=config.shard_replicas, ray_actor_options=cpus)
                .bind(str(p), stats)
                for i, p in enumerate(paths)
            ]
            log.info("%s: %s in %d shard(s) x %d replica(s)", name, index.name, len(paths), config.shard_replicas)
    resources = ray.cluster_resources()
    replicas = sum(map(len, shards.values())) * config.shard_replicas + config.reranker_replicas + 1
    if replicas * config.replica_cpus > resources.get("CPU", 0):
        # Serve would wait for CPUs that never come, replicas pending without an error
        raise InvalidInput(
            f"{replicas} replicas x {config.replica_cpus} CPUs do not fit the cluster's {resources.get('CPU', 0):g} "
            f"CPUs; lower --replica-cpus (e.g. {resources.get('CPU', 0) / replicas:.2g}) or add nodes"
        )
    gpus = config.reranker_gpus
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    reranker = (
        serve.deployment(RerankerReplica)
        .options(name="Reranker", num_replicas=config.reranker_replicas,
                 ray_actor_options={**cpus, "num_gpus": gpus})
        .bind()
    )  # fmt: skip
    router = serve.deployment(serve.ingress()(Router)).options(name="Router", num_replicas=1, ray_actor_options=cpus)
    return router.bind(settings, shards, reranker)


def run(
    settings: Settings,
    config: RayServeConfig = RayServeConfig(),
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
) -> None:
    """Connect to the Ray cluster at ``address`` (``None``: start a local one), deploy and
    serve until interrupted."""
    ray = require("ray", "ray")
    serve = require("ray.serve", "ray")
    if not ray.is_initialized():
        # a local cluster's workers run this interpreter, so they import the installed `cascade`
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    serve.start(http_options={"host": host, "port": port})
    # no per-request replica logs: streamed to this driver, they cost every call more than the search
    quiet = {"enable_access_log": False, "log_level": "WARNING"}
    serve.run(build_app(settings, config), name="cascade", route_prefix="/", logging_config=quiet)
    log.warning("serving on http://%s:%d through Ray Serve (Ctrl-C stops)", host, port)
    stop = threading.Event()
    # SIGTERM too stops cleanly: killed outright, a local cluster's processes would outlive us
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()

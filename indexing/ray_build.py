"""Distributed index builds on Ray Data: one shard per task, run by a pool of actors.

Each actor streams the corpus, keeps the documents of its shard (``crc32(id) % N``), builds
that shard with the family's own ``build`` and saves it as a normal index directory. GPU
actors are used when the cluster has GPUs (``gpus_per_worker``), CPU actors otherwise.
Shards already on disk are skipped, so a failed build resumes without redoing finished
shards; a worker killed mid-shard is restarted and its shard retried. The sharded manifest
is written last, once every shard is there.

Usage::

    report = build_sharded(CorpusSource("corpus.jsonl"), "out/", "bm25", num_shards=4, num_workers=2)
    ShardedRetriever.load("out/")
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.registry import RETRIEVERS
from cascade.retrieval.sharded import commit_shards, shard_docs, shard_name
from cascade.retrieval.storage import MANIFEST
from cascade.retrieval.types import check_unique

from .corpus import read_corpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusSource:
    """A corpus that every worker can open by itself (a path on storage all workers see)."""

    path: str
    fmt: str = "auto"
    fields: dict[str, str] = field(default_factory=dict)

    def open(self):
        return read_corpus(self.path, self.fmt, **self.fields)


@dataclass
class BuildReport:
    num_shards: int
    built: list[int]
    skipped: list[int]
    num_docs: int
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.num_docs / self.seconds if self.seconds else 0.0


class _ShardBuilder:
    """The Ray Data actor: builds whole shards, one row (one shard number) at a time."""

    def __init__(self, corpus: CorpusSource, out: str, retriever: str, params: dict, num_shards: int):
        self.corpus, self.out, self.num_shards = corpus, Path(out), num_shards
        self.family, self.params = RETRIEVERS.get(retriever), params

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        shard = int(row["shard"])
        t = time.perf_counter()
        docs = shard_docs(check_unique(self.corpus.open()), shard, self.num_shards)
        index = self.family.build(docs, **self.params)
        index.save(self.out / shard_name(shard))  # atomic: a killed worker leaves no half shard
        return {"shard": shard, "num_docs": index.num_docs, "seconds": time.perf_counter() - t}


def build_sharded(
    corpus: CorpusSource,
    out: str | Path,
    retriever: str = "bm25",
    num_shards: int = 4,
    num_workers: int = 2,
    params: dict | None = None,
    gpus_per_worker: float = 0,
    max_retries: int = 3,
) -> BuildReport:
    """Build (or finish building) a sharded index at ``out`` on the current Ray cluster
    (``ray.init()`` is called with defaults when no cluster is connected)."""
    ray = require("ray", "ray")
    if num_shards < 1 or num_workers < 1:
        raise InvalidInput("num_shards and num_workers must be >= 1")
    out = Path(out).resolve()
    params = dict(params or {})
    RETRIEVERS.get(retriever)  # unknown names fail here, before any worker starts
    todo = [i for i in range(num_shards) if not (out / shard_name(i) / MANIFEST).is_file()]
    skipped = sorted(set(range(num_shards)) - set(todo))
    if skipped:
        log.info("shards %s already built; building %s", skipped, todo)
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, include_dashboard=False)
    t = time.perf_counter()
    results: list[dict] = []
    if todo:
        ds = ray.data.from_items([{"shard": i} for i in todo], override_num_blocks=len(todo))
        results = ds.map(
            _ShardBuilder,
            fn_constructor_kwargs={"corpus": corpus, "out": str(out), "retriever": retriever,
                                   "params": params, "num_shards": num_shards},
            concurrency=min(num_workers, len(todo)),
            num_cpus=1,
            num_gpus=gpus_per_worker or None,
            max_restarts=max_retries,
            max_task_retries=max_retries,
        ).take_all()  # fmt: skip
    seconds = time.perf_counter() - t
    manifest = commit_shards(out, retriever, num_shards, params)
    return BuildReport(num_shards, sorted(r["shard"] for r in results), skipped, manifest.num_docs, seconds)

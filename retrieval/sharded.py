"""A sharded index: N ordinary index directories of one kind plus a manifest that binds them.

Layout::

    ROOT/manifest.json           kind "sharded": the shards' kind, names and manifest digests
    ROOT/shard-000/ ...          each a normal index directory (BM25, dense, ...)

Documents go to shard ``crc32(id) % N``, so any process can route a document without a
directory lookup. Search fans out to every shard and merges the per-shard top-k exactly as
one index would: scores are comparable because a family with collection statistics (BM25's
idf and average length) is scored with the statistics of the whole collection.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from .base import Retriever
from .errors import IndexMismatch, InvalidInput
from .registry import RETRIEVERS
from .storage import Manifest, manifest_digest, read_manifest, write_manifest
from .types import Document, Query, Ranking

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def shard_of(doc_id: str, num_shards: int) -> int:
    return zlib.crc32(doc_id.encode("utf-8")) % num_shards


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def shard_docs(docs: Iterable[Document], shard: int, num_shards: int) -> Iterator[Document]:
    return (d for d in docs if shard_of(d.id, num_shards) == shard)


def commit_shards(root: str | Path, kind: str, num_shards: int, params: dict) -> Manifest:
    """Bind the built shards under ``root`` with a manifest (the last write of a build)."""
    root = Path(root)
    digests, num_docs = [], 0
    for i in range(num_shards):
        path = root / shard_name(i)
        m = read_manifest(path)
        if m.kind != kind:
            raise IndexMismatch(f"{path} holds a {m.kind!r} index, not {kind!r}")
        digests.append(manifest_digest(path))
        num_docs += m.num_docs
    manifest = Manifest(
        "sharded", FORMAT_VERSION,
        {"retriever": kind, "num_shards": num_shards, "digests": digests, "params": params},
        num_docs, {},
    )  # fmt: skip
    write_manifest(root, manifest)
    return manifest


def shard_stats(shard: Retriever) -> Any | None:
    """A shard's collection statistics, for a family that scores with them (BM25), else None."""
    return shard.collection_stats() if hasattr(shard, "collection_stats") else None


def merge_stats(parts: Sequence[Any | None]) -> Any | None:
    """The whole collection's statistics from every shard's (:func:`shard_stats`); ``None`` for a
    family without collection statistics (dense, ...)."""
    if not parts or any(p is None for p in parts):
        return None
    return type(parts[0]).merge(parts)


def merge_rankings(queries: Sequence[Query], per_shard: Sequence[Sequence[Ranking]], k: int) -> list[Ranking]:
    """Merge each query's per-shard top-k into the top-k one index would give: every shard's
    hits together, ordered by score (ties by doc id), cut to ``k``. Exact, because a document
    lives in one shard and the scores are comparable across shards.

    Args:
        queries: the queries, in order.
        per_shard: for each shard, one ranking per query (same order).
        k: hits kept per query.
    """
    merged = []
    for i, q in enumerate(queries):
        ids = [d for rankings in per_shard for d in rankings[i].doc_ids]
        scores = [x for rankings in per_shard for x in rankings[i].scores]
        merged.append(Ranking.from_scores(q.id, ids, scores, k))
    return merged


class ShardedRetriever(Retriever):
    """Searches N shards and merges their rankings. ``threads`` shards are searched at once."""

    kind = "sharded"

    def __init__(self, shards: Sequence[Retriever], threads: int = 1, spec: tuple[str, dict] | None = None):
        """``spec`` (family name, build params) is what :meth:`save` records; a loaded index has it
        in its manifest already."""
        if not shards:
            raise InvalidInput("a sharded index needs at least one shard")
        self.shards = list(shards)
        self.threads = threads
        self.spec = spec
        merged = merge_stats([shard_stats(s) for s in self.shards])
        if merged is not None:
            for s in self.shards:
                s.use_collection_stats(merged)

    @classmethod
    def build(cls, docs: Iterable[Document], retriever: str = "bm25", num_shards: int = 4, **params) -> Self:
        """Build in this process (keeps every shard's documents in memory once).
        For a corpus that does not fit, or several machines, use ``indexing.ray_build``."""
        family = RETRIEVERS.get(retriever)
        buckets: list[list[Document]] = [[] for _ in range(num_shards)]
        for d in docs:
            buckets[shard_of(d.id, num_shards)].append(d)
        return cls([family.build(b, **params) for b in buckets], spec=(retriever, params))

    @property
    def num_docs(self) -> int:
        return sum(s.num_docs for s in self.shards)

    def search(self, queries: Sequence[Query], k: int = 10, **kwargs) -> list[Ranking]:
        with ThreadPoolExecutor(self.threads) as pool:
            per_shard = list(pool.map(lambda s: s.search(queries, k, **kwargs), self.shards))
        return merge_rankings(queries, per_shard, k)

    def save(self, path: str | Path) -> None:
        if self.spec is None:
            raise InvalidInput("only a sharded index built in this process can be saved; a loaded one is on disk")
        retriever, params = self.spec
        for i, shard in enumerate(self.shards):
            shard.save(Path(path) / shard_name(i))
        commit_shards(path, retriever, len(self.shards), params)

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> Self:
        retriever, paths = shard_paths(path)
        family = RETRIEVERS.get(retriever)
        return cls([family.load(p) for p in paths], threads)


def shard_paths(path: str | Path) -> tuple[str, list[Path]]:
    """The shards' family name and directories of the sharded index at ``path``, checked
    against its manifest (loading is left to the caller: this process or a remote replica).

    Raises:
        IndexMismatch: not a sharded index, another format version, a shard missing or not
            the one the index was built with.
    """
    path = Path(path)
    m = read_manifest(path)
    if m.kind != ShardedRetriever.kind:
        raise IndexMismatch(f"{path} holds a {m.kind!r} index, not a sharded one")
    if m.format_version != FORMAT_VERSION:
        raise IndexMismatch(f"{path} has format version {m.format_version}; this Cascade reads {FORMAT_VERSION}")
    paths = []
    for i, digest in enumerate(m.params["digests"]):
        shard_path = path / shard_name(i)
        if not shard_path.is_dir():
            raise IndexMismatch(f"{path}: {shard_name(i)} is missing")
        if manifest_digest(shard_path) != digest:
            raise IndexMismatch(f"{path}: {shard_name(i)} is not the shard this index was built with")
        paths.append(shard_path)
    return m.params["retriever"], paths

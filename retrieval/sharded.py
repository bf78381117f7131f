"""A sharded index: N ordinary index directories of one kind plus a manifest that binds them.

Layout::

    ROOT/manifest.json           kind "sharded": the shards' family, count and build params; its
                                 files are the shards' manifests, with their checksums and sizes
    ROOT/shard-000/ ...          each a normal index directory (BM25, dense, ...)

Documents go to shard ``crc32(id) % N``, so any process can route a document without a
directory lookup. Shards are the parts of :mod:`.partition`: search fans out to every shard,
each scored with the whole index's statistics (BM25's idf and average length), and merges
the per-shard top-k exactly as one index would rank.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Self

from .base import Retriever
from .errors import IndexMismatch, InvalidInput
from .partition import merge_stats, part_stats, search_parts
from .registry import RETRIEVERS
from .storage import MANIFEST, FileMismatch, Manifest, checksum_files, read_manifest, write_manifest
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
    """Bind the built shards under ``root`` with a manifest (the last write of a build). It lists
    each shard's manifest with its checksum, and each shard's manifest checksums the shard's
    files, so a shard replaced or damaged after the commit is refused at load."""
    root = Path(root)
    num_docs = 0
    for i in range(num_shards):
        num_docs += read_manifest(root / shard_name(i), kind).num_docs or 0
    files = checksum_files(root, [f"{shard_name(i)}/{MANIFEST}" for i in range(num_shards)])
    params = {"retriever": kind, "num_shards": num_shards, "params": params}
    manifest = Manifest(ShardedRetriever.kind, FORMAT_VERSION, params, num_docs, files)
    write_manifest(root, manifest)
    return manifest


class ShardedRetriever(Retriever):
    """Searches N shards and merges their rankings. ``threads`` shards are searched at once.

    The whole index's statistics are computed once, here, and passed to every shard's search;
    the shards themselves are never changed.
    """

    kind = "sharded"

    def __init__(self, shards: Sequence[Retriever], threads: int = 1, spec: tuple[str, dict] | None = None):
        """``spec`` (family name, build params) is what :meth:`save` records; a loaded index has it
        in its manifest already."""
        if not shards:
            raise InvalidInput("a sharded index needs at least one shard")
        self.shards = list(shards)
        self.threads = threads
        self.spec = spec
        self.stats = merge_stats([part_stats(s) for s in self.shards])

    @classmethod
    def build(cls, docs: Iterable[Document], retriever: str = "bm25", num_shards: int = 4, **params) -> Self:
        """Build in this process (keeps every shard's documents in memory once).
        For a corpus that does not fit, or several machines, use ``cascade.indexing.ray_build``."""
        family = RETRIEVERS.get(retriever)
        buckets: list[list[Document]] = [[] for _ in range(num_shards)]
        for d in docs:
            buckets[shard_of(d.id, num_shards)].append(d)
        return cls([family.build(b, **params) for b in buckets], spec=(retriever, params))

    @property
    def num_docs(self) -> int:
        return sum(s.num_docs for s in self.shards)

    def search(self, queries: Sequence[Query], k: int = 10, **kwargs) -> list[Ranking]:
        return search_parts(self.shards, queries, k, self.stats, self.threads, **kwargs)

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
    try:  # the shards' manifests are small: their checksums are always verified
        m = read_manifest(path, ShardedRetriever.kind, (FORMAT_VERSION,), verify=True)
    except FileMismatch as e:
        shard = e.name.split("/")[0]
        raise IndexMismatch(f"{path}: {shard} is not the shard this index was built with") from None
    num_shards = m.params.get("num_shards", len(m.files))
    for i in range(num_shards):
        if f"{shard_name(i)}/{MANIFEST}" not in m.files:
            raise IndexMismatch(f"{path}: the manifest does not bind {shard_name(i)}")
    return m.params["retriever"], [path / shard_name(i) for i in range(num_shards)]

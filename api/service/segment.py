"""Segments of a collection and the read-only snapshots that searches use.

A segment is one ingest batch (or one compaction's output): an :class:`IndexSet`
directory with one sub-index per retriever stage, built by the retriever classes' own
``build``/``save``/``load``, plus a docstore of its chunks. A segment never changes after
it is written; deleting or replacing a document only marks its chunks dead (a tombstone)
in the next snapshot.

Segments are the parts of :mod:`cascade.retrieval.partition`. Scores across segments: a
retriever whose scores depend on corpus statistics (BM25's idf and mean length) would score
the same text differently in a small and a large segment, so each snapshot computes the
statistics of the whole collection's live documents once and every segment is searched
with them, giving exactly the scores one index over the same documents would (dense,
SPLADE and ColBERT scores do not depend on the corpus and need none). A kind with corpus
statistics it does not report (``lucene-bm25``) is merged on its per-segment scores, an
approximation that compaction removes by merging segments.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cascade.indexing.docstore import DocStore
from cascade.indexing.index_set import IndexSet, stage_key
from cascade.retrieval.base import Retriever
from cascade.retrieval.partition import has_stats, merge_rankings, merge_stats, part_stats, search_part
from cascade.retrieval.pipeline import PipelineSpec, RetrieverStage
from cascade.retrieval.storage import atomic_dir
from cascade.retrieval.types import Document, Query, Ranking

from .filters import Predicate

log = logging.getLogger(__name__)

#: Characters of chunk text (and titles) a segment keeps in memory for the hits it returns.
HOT_CHARS = 8_000_000


def build_segment(path: Path, chunks: Sequence[Document], stages: Sequence[RetrieverStage]) -> None:
    """Write a segment directory atomically: every stage's index and the chunks' docstore."""
    with atomic_dir(path) as tmp:
        IndexSet(tmp, corpus=lambda: iter(chunks)).build(PipelineSpec(retrievers=list(stages)))


class Segment:
    """A loaded segment: its retrievers by stage key, its docstore, and per-chunk parents
    and metadata (what tombstones and filters are evaluated on).

    Removal is deferred until no snapshot in use still reads the segment (:meth:`retire`).
    """

    def __init__(self, sid: int, path: Path, stages: Sequence[RetrieverStage]):
        self.id, self.path = sid, path
        index_set = IndexSet(path)
        self.retrievers: dict[str, Retriever] = {stage_key(s): index_set.retriever(s) for s in stages}
        self.docs: DocStore = index_set.docstore()
        self.chunk_ids: list[str] = []
        self.parents: list[str] = []
        self.metadata: list[dict[str, Any]] = []
        for doc in self.docs:
            self.chunk_ids.append(doc.id)
            self.parents.append(str(doc.metadata.get("parent_id", doc.id)))
            self.metadata.append(dict(doc.metadata))
        self.position = {c: i for i, c in enumerate(self.chunk_ids)}
        self.cache: dict[str, np.ndarray] = {}  # per stage key: chunk position of each indexed doc
        self._hot: OrderedDict[str, Document] = OrderedDict()  # recently read chunks, oldest first
        self._hot_chars = 0
        self._hot_lock = threading.Lock()
        self._lock = threading.Lock()
        self._refs = 0
        self._retired = False

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def documents(self, ids: Sequence[str]) -> list[Document]:
        """Chunks by id, in the order given (ids the segment lacks are skipped). Recently read
        chunks come from memory, up to ``HOT_CHARS`` characters of text per segment, least
        recently read out first: a segment never changes, so a kept chunk is never stale, and
        reading the top hits' texts from SQLite was most of a cheap search's time."""
        with self._hot_lock:
            found = {i: d for i in ids if (d := self._hot.get(i)) is not None}
            for i in found:
                self._hot.move_to_end(i)
        missing = [i for i in ids if i not in found]
        if missing:
            read = self.docs.get_many(missing, missing_ok=True)
            found.update((d.id, d) for d in read)
            with self._hot_lock:
                for d in read:
                    if d.id not in self._hot:
                        self._hot[d.id] = d
                        self._hot_chars += len(d.text) + len(d.title)
                while self._hot_chars > HOT_CHARS and self._hot:
                    _, old = self._hot.popitem(last=False)
                    self._hot_chars -= len(old.text) + len(old.title)
        return [found[i] for i in ids if i in found]

    def live_in_index_order(self, key: str, live: np.ndarray) -> np.ndarray:
        """A live mask (in chunk order) in the order stage ``key``'s index holds documents."""
        retr = self.retrievers[key]
        pos = self.cache.get(key)
        if pos is None:
            ids = retr.doc_ids.tolist()
            pos = np.fromiter((self.position[d] for d in ids), dtype=np.int64, count=len(ids))
            self.cache[key] = pos
        return live[pos]

    def live_mask(self, doc_segment: dict[str, int]) -> np.ndarray:
        """Chunks whose document's current version lives in this segment."""
        sid = self.id
        return np.fromiter(
            (doc_segment.get(p) == sid for p in self.parents), dtype=bool, count=len(self.parents)
        )

    def acquire(self) -> None:
        with self._lock:
            self._refs += 1

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            gone = self._retired and self._refs == 0
        if gone:
            self._remove()

    def retire(self) -> None:
        """No longer part of the collection: remove it once the last reader is done."""
        with self._lock:
            self._retired = True
            gone = self._refs == 0
        if gone:
            self._remove()

    def _remove(self) -> None:
        self.docs.close()
        shutil.rmtree(self.path, ignore_errors=True)
        log.info("removed segment %s", self.path.name)


@dataclass(frozen=True)
class SegmentView:
    segment: Segment
    live: np.ndarray  # bool per chunk, in the segment's chunk order

    @property
    def num_dead(self) -> int:
        return int(len(self.live) - self.live.sum())


@dataclass(frozen=True)
class Snapshot:
    """What one search reads: the segments and their live masks at one commit, and per
    stage key the collection statistics every segment is searched with (``None``: each
    segment's own, for a family without statistics or one segment with nothing deleted)."""

    generation: int
    views: tuple[SegmentView, ...]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_live(self) -> int:
        return int(sum(v.live.sum() for v in self.views))


def live_stats(views: Sequence[SegmentView], key: str) -> Any | None:
    """The statistics of every segment's live documents together for stage ``key``, or
    ``None``: a family without statistics, or no live document at all."""
    parts = []
    for view in views:
        retr = view.segment.retrievers[key]
        if not has_stats(retr):
            return None
        live = None if view.num_dead == 0 else view.segment.live_in_index_order(key, view.live)
        parts.append(part_stats(retr, live))
    stats = merge_stats(parts)
    return stats if stats is not None and stats.num_docs > 0 else None


def make_snapshot(generation: int, views: Sequence[SegmentView], keys: Sequence[str]) -> Snapshot:
    """A snapshot over ``views``; one segment with nothing deleted is scored as it is."""
    exact_already = len(views) == 1 and views[0].num_dead == 0
    stats = {key: None if exact_already else live_stats(views, key) for key in keys}
    return Snapshot(generation, tuple(views), stats)


# --- searching a snapshot -----------------------------------------------------------------


class SnapshotSearch:
    """One request's view of a snapshot: stage retrievers that skip dead and filtered-out
    chunks and merge segments by score, and the document source for rerankers and fields.

    Any retriever family works: segments are searched through the plain ``search`` method
    (:func:`~cascade.retrieval.partition.search_part`), asking for more hits until ``k``
    survivors are found or the segment is exhausted, so tombstones and filters never make a
    result shorter than it should be.
    """

    def __init__(self, snapshot: Snapshot, predicate: Predicate | None = None):
        self.snapshot, self.predicate = snapshot, predicate
        self.origin: dict[str, Segment] = {}  # live chunk ids are unique within a snapshot
        self._origin_lock = threading.Lock()

    def retriever(self, key: str, predicate: Predicate | None = None) -> _StageRetriever:
        """The stage retriever of index ``key``; ``predicate``: this stage's own filter
        (a per-prefetch filter), instead of the search's."""
        return _StageRetriever(self, key, self.predicate if predicate is None else predicate)

    def _keep(self, view: SegmentView, chunk_id: str, predicate: Predicate | None) -> bool:
        i = view.segment.position[chunk_id]
        return bool(view.live[i]) and (predicate is None or predicate(view.segment.metadata[i]))

    def search_segment(
        self, view: SegmentView, key: str, queries: Sequence[Query], k: int, kwargs: dict,
        predicate: Predicate | None = None,
    ) -> list[Ranking]:
        """Each query's top ``k`` live (and, with a filter, matching) chunks of one segment;
        ``predicate`` (default: the search's) is the filter."""
        predicate = self.predicate if predicate is None else predicate
        fetch = k + view.num_dead if predicate is None else max(4 * k, k + view.num_dead)
        retr = view.segment.retrievers[key]
        stats = self.snapshot.stats.get(key)
        return search_part(retr, queries, k, stats, lambda d: self._keep(view, d, predicate), fetch, **kwargs)

    def get_many(self, ids: Sequence[str]) -> list[Document]:
        """Chunks by id, in the order given (ids this search did not return are skipped)."""
        by_segment: dict[int, list[str]] = {}
        for i in ids:
            seg = self.origin.get(i)
            if seg is not None:
                by_segment.setdefault(seg.id, []).append(i)
        found: dict[str, Document] = {}
        for chunk_ids in by_segment.values():
            seg = self.origin[chunk_ids[0]]
            found.update((d.id, d) for d in seg.documents(chunk_ids))
        return [found[i] for i in ids if i in found]


class _StageRetriever:
    """The retriever a :class:`Pipeline` stage sees: every segment, merged by score."""

    def __init__(self, ctx: SnapshotSearch, key: str, predicate: Predicate | None = None):
        self.ctx, self.key, self.predicate = ctx, key, predicate

    def search(self, queries: Sequence[Query], k: int = 10, **kwargs) -> list[Ranking]:
        per_segment = []
        for view in self.ctx.snapshot.views:
            rankings = self.ctx.search_segment(view, self.key, queries, k, kwargs, self.predicate)
            with self.ctx._origin_lock:
                for r in rankings:
                    self.ctx.origin.update(dict.fromkeys(r.doc_ids, view.segment))
            per_segment.append(rankings)
        return merge_rankings(queries, per_segment, k)

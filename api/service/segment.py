"""Segments of a collection and the read-only snapshots that searches use.

A segment is one ingest batch (or one compaction's output): an :class:`IndexSet`
directory with one sub-index per retriever stage, built by the retriever classes' own
``build``/``save``/``load``, plus a docstore of its chunks. A segment never changes after
it is written; deleting or replacing a document only marks its chunks dead (a tombstone)
in the next snapshot.

Scores across segments: a retriever whose scores depend on corpus statistics (BM25's idf
and mean length) would score the same text differently in a small and a large segment.
For those kinds an *aligner* (:data:`ALIGNERS`) rescores every segment with the
statistics of the whole collection's live documents, so a search over many segments
returns exactly the scores one index over the same documents would (dense, SPLADE and
ColBERT scores do not depend on the corpus and need none). A kind with corpus statistics
and no aligner (``lucene-bm25``) is merged on its per-segment scores, an approximation
that compaction removes by merging segments.
"""

from __future__ import annotations

import copy
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cascade.indexing.docstore import DocStore
from cascade.indexing.index_set import IndexSet, stage_key
from cascade.retrieval.base import Retriever
from cascade.retrieval.pipeline import PipelineSpec, RetrieverStage
from cascade.retrieval.storage import atomic_dir
from cascade.retrieval.types import Document, Query, Ranking

from .filters import Predicate

log = logging.getLogger(__name__)


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
        self.cache: dict[str, Any] = {}  # per-kind data an aligner derives once (immutable segment)
        self._lock = threading.Lock()
        self._refs = 0
        self._retired = False

    def __len__(self) -> int:
        return len(self.chunk_ids)

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
    stage key one searchable retriever per segment (statistics-aligned where needed)."""

    generation: int
    views: tuple[SegmentView, ...]
    searchers: dict[str, tuple[Retriever, ...]] = field(default_factory=dict)

    @property
    def num_live(self) -> int:
        return int(sum(v.live.sum() for v in self.views))


# --- statistics alignment, per retriever kind ---------------------------------------------


def _align_bm25(items: Sequence[tuple[Any, SegmentView]], key: str) -> list[Any]:
    """BM25 over several segments with the df, document count and total length of all live
    documents together (through the retriever's own ``use_collection_stats``, on a copy: a
    segment's retriever is shared by every snapshot), i.e. the scores one BM25 index over
    those documents gives."""
    from cascade.retrieval.sparse.bm25 import CollectionStats

    df: dict[str, int] = {}
    n_docs = total = 0
    for retr, view in items:
        seg = view.segment
        cached = seg.cache.get(key)
        if cached is None:
            pos = np.fromiter(
                (seg.position[d] for d in retr.doc_ids.tolist()), dtype=np.int64, count=retr.num_docs
            )
            term_of_posting = np.repeat(np.arange(len(retr.vocab)), np.diff(retr.indptr))
            cached = seg.cache[key] = (pos, term_of_posting)
        pos, term_of_posting = cached
        live_doc = view.live[pos]  # in the retriever's own document order
        live_df = np.bincount(term_of_posting[live_doc[np.asarray(retr.postings)]], minlength=len(retr.vocab))
        for term, n in zip(retr.vocab, live_df.tolist(), strict=True):
            df[term] = df.get(term, 0) + n  # terms only dead documents hold stay, with df 0
        n_docs += int(live_doc.sum())
        total += int(np.asarray(retr.doc_lens, dtype=np.int64)[live_doc].sum())
    if n_docs == 0:
        return [retr for retr, _ in items]
    stats = CollectionStats(n_docs, total, df)
    out = []
    for retr, _ in items:
        other = copy.copy(retr)
        other.use_collection_stats(stats)
        out.append(other)
    return out


#: Retriever kind -> function rescoring a collection's segments with global statistics.
ALIGNERS: dict[str, Callable[[Sequence[tuple[Any, SegmentView]], str], list[Any]]] = {"bm25": _align_bm25}


def make_snapshot(generation: int, views: Sequence[SegmentView], keys: Sequence[str]) -> Snapshot:
    searchers: dict[str, tuple[Retriever, ...]] = {}
    for key in keys:
        retrs = [v.segment.retrievers[key] for v in views]
        kind = getattr(type(retrs[0]), "kind", None) if retrs else None
        aligner = ALIGNERS.get(kind)
        exact_already = len(views) == 1 and views[0].num_dead == 0
        if aligner is not None and not exact_already:
            retrs = aligner(list(zip(retrs, views, strict=True)), key)
        searchers[key] = tuple(retrs)
    return Snapshot(generation, tuple(views), searchers)


# --- searching a snapshot -----------------------------------------------------------------


class SnapshotSearch:
    """One request's view of a snapshot: stage retrievers that skip dead and filtered-out
    chunks and merge segments by score, and the document source for rerankers and fields.

    Any retriever family works: segments are searched through the plain ``search`` method,
    asking for more hits (doubling) until ``k`` survivors are found or the segment is
    exhausted, so tombstones and filters never make a result shorter than it should be.
    """

    def __init__(self, snapshot: Snapshot, predicate: Predicate | None = None):
        self.snapshot, self.predicate = snapshot, predicate
        self.origin: dict[str, Segment] = {}  # live chunk ids are unique within a snapshot
        self._origin_lock = threading.Lock()

    def retriever(self, key: str) -> _StageRetriever:
        return _StageRetriever(self, key)

    def _keep(self, view: SegmentView, chunk_id: str) -> bool:
        i = view.segment.position[chunk_id]
        return bool(view.live[i]) and (self.predicate is None or self.predicate(view.segment.metadata[i]))

    def search_segment(
        self, view: SegmentView, retr: Retriever, queries: Sequence[Query], k: int, kwargs: dict
    ) -> list[list[tuple[str, float]]]:
        n = len(view.segment)
        fetch = min(n, k + view.num_dead if self.predicate is None else max(4 * k, k + view.num_dead))
        results: list[list[tuple[str, float]]] = [[] for _ in queries]
        pending = list(range(len(queries)))
        while pending and fetch > 0:
            rankings = retr.search([queries[i] for i in pending], k=fetch, **kwargs)
            still = []
            for i, r in zip(pending, rankings, strict=True):
                kept = [(d, s) for d, s in zip(r.doc_ids, r.scores, strict=True) if self._keep(view, d)]
                if len(kept) >= k or len(r) < fetch or fetch >= n:
                    results[i] = kept[:k]
                else:
                    still.append(i)
            pending, fetch = still, min(n, fetch * 4)
        return results

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
            found.update((d.id, d) for d in seg.docs.get_many(chunk_ids, missing_ok=True))
        return [found[i] for i in ids if i in found]


class _StageRetriever:
    """The retriever a :class:`Pipeline` stage sees: every segment, merged by score."""

    def __init__(self, ctx: SnapshotSearch, key: str):
        self.ctx, self.key = ctx, key

    def search(self, queries: Sequence[Query], k: int = 10, **kwargs) -> list[Ranking]:
        snap = self.ctx.snapshot
        ids: list[list[str]] = [[] for _ in queries]
        scores: list[list[float]] = [[] for _ in queries]
        for view, retr in zip(snap.views, snap.searchers[self.key], strict=True):
            per_query = self.ctx.search_segment(view, retr, queries, k, kwargs)
            with self.ctx._origin_lock:
                for i, hits in enumerate(per_query):
                    for d, s in hits:
                        ids[i].append(d)
                        scores[i].append(s)
                        self.ctx.origin[d] = view.segment
        return [Ranking.from_scores(q.id, ids[i], scores[i], k) for i, q in enumerate(queries)]

"""Collections: a searchable, updatable set of documents in one directory.

Layout::

    ROOT/manifest.json          kind "collection": the configuration (pipeline, chunking) in its
                                params, written once at create (a :class:`~cascade.retrieval.storage.Manifest`)
    ROOT/catalog.sqlite         the committed state: segments, and per document its live
                                segment, content hash, chunk count, title and metadata
    ROOT/segments/00000001/     one segment per ingest batch (see :mod:`cascade.api.service.segment`)

Durability. An ingest batch (1) chunks the changed documents, (2) writes a new segment
directory atomically (temp dir, fsync, rename), then (3) commits one SQLite transaction
that adds the segment and points the batch's documents at it. Step 3 is the commit point
(the catalog is the collection's manifest of segments and documents): a crash before it
leaves the catalog as it was, and the orphan segment directory is removed at the next
open. Deletes are one transaction removing catalog rows; the chunks in the segments
become tombstones (dead in every later snapshot) until compaction rewrites them away.

Concurrency. Writers (ingest, delete, the compaction's commit) are serialized by a lock;
searches never wait for them: each search leases the current immutable :class:`Snapshot`
and reads only it. Compaction merges segments in a background thread from a leased
snapshot, then commits under the writer lock: documents still pointing at the merged
segments move to the new one, documents changed in the meantime keep their newer version.
A merged segment's directory is removed once no search still reads it.

One process owns a collection directory at a time (the data directory's lock,
:mod:`cascade.api.service.data_lock`, makes sure of it). A consistent copy for a snapshot
archive is :meth:`SegmentedCollection.frozen`.
Its configuration and result types are in :mod:`cascade.api.service.config`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from cascade.indexing.chunking import chunk_documents
from cascade.indexing.index_set import stage_key
from cascade.retrieval.base import Reranker
from cascade.retrieval.errors import IndexMismatch, InvalidInput, NotFound
from cascade.retrieval.pipeline import Pipeline, PipelineSpec
from cascade.retrieval.storage import MANIFEST, Manifest, atomic_dir, read_manifest, write_manifest
from cascade.retrieval.types import Document, Query, Ranking

from .config import (
    CollectionConfig,
    IngestResult,
    SearchHit,
    SearchOutput,
    check_name,
    content_hash,
    trim_depth,
    validate_documents,
)
from .filters import Predicate, compile_filter
from .segment import Segment, SegmentView, Snapshot, SnapshotSearch, build_segment, make_snapshot

log = logging.getLogger(__name__)

KIND = "collection"
FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY, num_chunks INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY, segment INTEGER NOT NULL, hash TEXT NOT NULL, num_chunks INTEGER NOT NULL,
    title TEXT NOT NULL, metadata TEXT NOT NULL
) WITHOUT ROWID;
"""


class SegmentedCollection:
    """Open with :meth:`open` or make one with :meth:`create`.

    Example:
        >>> c = SegmentedCollection.create("/tmp/c", CollectionConfig(name="c", pipeline=resolve_pipeline("bm25")))  # doctest: +SKIP
        >>> c.upsert([Document("d1", "stem cells")])  # doctest: +SKIP
        >>> c.search([Query("q", "stem")], k=5).hits  # doctest: +SKIP
    """

    read_only = False

    def __init__(self, root: Path, config: CollectionConfig):
        self.root, self.config = root, config
        self.name = config.name
        self._stages = config.stages
        self._keys = [stage_key(s) for s in self._stages]
        self._db = sqlite3.connect(root / "catalog.sqlite", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._write = threading.Lock()  # one writer at a time; also guards self._db
        self._state = threading.Lock()  # guards the snapshot reference and the lease counts
        self._compacting = threading.Lock()
        self._compactor: threading.Thread | None = None
        self._closed = False
        self._load()

    # -- create / open -------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | Path, config: CollectionConfig) -> SegmentedCollection:
        """Make an empty collection directory (atomically) and open it.

        Raises:
            InvalidInput: bad name; Conflict-like InvalidInput if the directory exists.
        """
        root = Path(root)
        check_name(config.name)
        if root.exists():
            raise InvalidInput(f"collection directory {root} already exists")
        with atomic_dir(root) as tmp:
            # no files listed: the catalog, the collection's commit point, changes with every write
            write_manifest(tmp, Manifest(KIND, FORMAT_VERSION, {"config": config.model_dump(mode="json")}))
            (tmp / "segments").mkdir()
            db = sqlite3.connect(tmp / "catalog.sqlite")
            db.executescript(_SCHEMA)
            db.close()
        return cls(root, config)

    @classmethod
    def open(cls, root: str | Path) -> SegmentedCollection:
        """Open a collection directory (one written by older Cascade versions included).

        Raises:
            NotFound: no manifest; IndexMismatch: another kind or format version.
        """
        root = Path(root)
        if not (root / MANIFEST).is_file():
            raise NotFound(f"{root} is not a collection (no {MANIFEST})")
        manifest = read_manifest(root, KIND, (FORMAT_VERSION,))
        return cls(root, CollectionConfig.model_validate(manifest.params["config"]))

    def _seg_path(self, sid: int) -> Path:
        return self.root / "segments" / f"{sid:08d}"

    def _load(self) -> None:
        seg_ids = [r[0] for r in self._db.execute("SELECT id FROM segments ORDER BY id")]
        # crash leftovers: segment dirs the catalog never committed, or merged away
        seg_root = self.root / "segments"
        on_disk = [p for p in seg_root.iterdir()] if seg_root.is_dir() else []
        for p in on_disk:
            if not (p.name.isdigit() and int(p.name) in seg_ids):
                log.warning("removing uncommitted segment %s", p)
                shutil.rmtree(p, ignore_errors=True)
        self._next_id = max([0, *seg_ids, *(int(p.name) for p in on_disk if p.name.isdigit())]) + 1
        self._doc_segment: dict[str, int] = dict(self._db.execute("SELECT id, segment FROM docs"))
        self._doc_hash: dict[str, str] = dict(self._db.execute("SELECT id, hash FROM docs"))
        segments = [Segment(sid, self._seg_path(sid), self._stages) for sid in seg_ids]
        views = [SegmentView(s, s.live_mask(self._doc_segment)) for s in segments]
        self._generation = 0
        self._snapshot = make_snapshot(0, views, self._keys)
        for s in segments:
            s.acquire()  # the current snapshot holds a reference to each of its segments

    # -- snapshots -----------------------------------------------------------------------

    @contextmanager
    def lease(self) -> Iterator[Snapshot]:
        """The current snapshot, kept readable (its segments on disk) until the block ends."""
        with self._state:
            snap = self._snapshot
            for v in snap.views:
                v.segment.acquire()
        try:
            yield snap
        finally:
            for v in snap.views:
                v.segment.release()

    def _publish(
        self, segments: Sequence[Segment], changed: set[int], retired: Sequence[Segment] = ()
    ) -> None:
        """Install a snapshot over ``segments``; live masks are recomputed for ``changed``."""
        old = {v.segment.id: v for v in self._snapshot.views}
        views = [
            old[s.id]
            if s.id in old and s.id not in changed
            else SegmentView(s, s.live_mask(self._doc_segment))
            for s in segments
        ]
        snap = make_snapshot(self._generation + 1, views, self._keys)
        for v in views:
            if v.segment.id not in old:
                v.segment.acquire()
        with self._state:
            self._generation += 1
            self._snapshot = snap
        for s in retired:
            s.release()  # the reference the previous current snapshot held
            s.retire()

    def _segments(self) -> list[Segment]:
        return [v.segment for v in self._snapshot.views]

    @contextmanager
    def frozen(self, catalog_copy: Path) -> Iterator[tuple[list[Path], int]]:
        """One commit of the collection held still for a copy (a snapshot archive): the catalog
        is copied to ``catalog_copy`` (SQLite's backup, a consistent file) and the current
        segments are leased, both under the writer lock, so the copy and the segment set are
        the same commit. Writers wait only for the catalog copy; searches never wait, and
        writes after it go on while the caller reads the (immutable) segment directories.

        Yields:
            The segment directories of that commit and its number of documents.
        """
        with ExitStack() as stack:
            with self._write:
                self._check_open()
                dst = sqlite3.connect(catalog_copy)
                try:
                    self._db.backup(dst)
                finally:
                    dst.close()
                num_docs = len(self._doc_segment)
                snap = stack.enter_context(self.lease())  # held past the lock, until the copy ends
            yield [v.segment.path for v in snap.views], num_docs

    # -- writes --------------------------------------------------------------------------

    def upsert(self, docs: Iterable[Document]) -> IngestResult:
        """Add or replace documents by id. Unchanged documents (same title, text and metadata)
        are skipped: nothing is re-encoded for them.

        Raises:
            InvalidInput: duplicate ids in the batch, an empty document, reserved metadata keys.
        """
        docs = validate_documents(docs)
        hashes = {d.id: content_hash(d) for d in docs}
        with self._write:
            self._check_open()
            changed = [d for d in docs if self._doc_hash.get(d.id) != hashes[d.id]]
            added = sum(d.id not in self._doc_hash for d in changed)
            if not changed:
                return IngestResult(0, 0, len(docs), 0, None)
            chunks = list(chunk_documents(changed, self.config.chunking))
            sid = self._next_id
            self._next_id += 1
            path = self._seg_path(sid)
            committed = False
            try:
                build_segment(path, chunks, self._stages)
                _hook("segment_written")
                n_chunks: dict[str, int] = {}
                for c in chunks:
                    n_chunks[c.metadata["parent_id"]] = n_chunks.get(c.metadata["parent_id"], 0) + 1
                rows = [
                    (
                        d.id,
                        sid,
                        hashes[d.id],
                        n_chunks[d.id],
                        d.title,
                        json.dumps(dict(d.metadata), default=str),
                    )
                    for d in changed
                ]
                with self._transaction() as db:
                    db.execute("INSERT INTO segments VALUES (?, ?, ?)", (sid, len(chunks), time.time()))
                    db.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, ?, ?)", rows)
                committed = True
            finally:
                if not committed:
                    shutil.rmtree(path, ignore_errors=True)
            touched = {self._doc_segment[d.id] for d in changed if d.id in self._doc_segment}
            for d in changed:
                self._doc_segment[d.id] = sid
                self._doc_hash[d.id] = hashes[d.id]
            segment = Segment(sid, path, self._stages)
            self._drop_empty_and_publish([*self._segments(), segment], touched | {sid})
        self.maybe_compact()
        return IngestResult(added, len(changed) - added, len(docs) - len(changed), len(chunks), sid)

    def delete(self, ids: Sequence[str] | None = None, where: Mapping[str, Any] | None = None) -> int:
        """Delete documents by id and/or by a metadata filter (both: either matches).

        Returns:
            How many documents were deleted (unknown ids are ignored).

        Raises:
            InvalidInput: neither ids nor a filter, or a malformed filter.
        """
        predicate = compile_filter(where) if where is not None else None
        if ids is None and where is None:
            raise InvalidInput("give document ids or a filter to delete")
        if where is not None and predicate is None:
            raise InvalidInput("an empty filter would delete everything; list the ids or drop the collection")
        with self._write:
            self._check_open()
            targets = {i for i in (ids or []) if i in self._doc_segment}
            if predicate is not None:
                for doc_id, meta in self._db.execute("SELECT id, metadata FROM docs"):
                    if predicate(json.loads(meta)):
                        targets.add(doc_id)
            if not targets:
                return 0
            ordered = sorted(targets)
            with self._transaction() as db:
                db.executemany("DELETE FROM docs WHERE id = ?", [(i,) for i in ordered])
            touched = {self._doc_segment.pop(i) for i in ordered}
            for i in ordered:
                self._doc_hash.pop(i, None)
            self._drop_empty_and_publish(self._segments(), touched)
        self.maybe_compact()
        return len(targets)

    def _drop_empty_and_publish(
        self, segments: list[Segment], changed: set[int], retired: Sequence[Segment] = ()
    ) -> None:
        """Publish ``segments``; those left with no live document leave the catalog at once."""
        live_counts: dict[int, int] = {}
        for sid in self._doc_segment.values():
            live_counts[sid] = live_counts.get(sid, 0) + 1
        empty = [s for s in segments if not live_counts.get(s.id)]
        if empty:
            with self._transaction() as db:
                db.executemany("DELETE FROM segments WHERE id = ?", [(s.id,) for s in empty])
        old_ids = {v.segment.id for v in self._snapshot.views}
        keep = [s for s in segments if s not in empty]
        self._publish(keep, changed, retired=[*retired, *(s for s in empty if s.id in old_ids)])
        for s in empty:
            if s.id not in old_ids:
                s.retire()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            _hook("before_commit")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- compaction ----------------------------------------------------------------------

    def _plan(self, snap: Snapshot, full: bool) -> list[SegmentView]:
        views = list(snap.views)
        if full:
            return views if len(views) > 1 or any(v.num_dead for v in views) else []
        spec = self.config.compaction
        pick = {v.segment.id: v for v in views if len(v.live) and v.live.mean() < spec.min_live_ratio}
        rest = sorted((v for v in views if v.segment.id not in pick), key=lambda v: len(v.live))
        while len(views) - len(pick) + (1 if pick else 0) > spec.max_segments and rest:
            v = rest.pop(0)
            pick[v.segment.id] = v
        return list(pick.values()) if len(pick) > 1 or any(v.num_dead for v in pick.values()) else []

    def compact(self, full: bool = False) -> bool:
        """Merge segments (all of them with ``full``, else as the compaction policy says).

        Returns:
            Whether anything was merged.
        """
        with self._compacting, self.lease() as snap:
            plan = self._plan(snap, full)
            if not plan:
                return False
            live = [
                d
                for v in plan
                for d in v.segment.docs.get_many(
                    [c for c, ok in zip(v.segment.chunk_ids, v.live, strict=True) if ok]
                )
            ]
            with self._write:
                sid = self._next_id
                self._next_id += 1
            path = self._seg_path(sid)
            if live:
                build_segment(path, live, self._stages)
            merged = {v.segment.id for v in plan}
            with self._write:
                if self._closed:
                    shutil.rmtree(path, ignore_errors=True)
                    return False
                with self._transaction() as db:
                    if live:
                        db.execute("INSERT INTO segments VALUES (?, ?, ?)", (sid, len(live), time.time()))
                    marks = ",".join("?" * len(merged))
                    db.execute(f"UPDATE docs SET segment = ? WHERE segment IN ({marks})", (sid, *merged))
                    db.execute(f"DELETE FROM segments WHERE id IN ({marks})", tuple(merged))
                for doc_id, s in list(self._doc_segment.items()):
                    if s in merged:
                        self._doc_segment[doc_id] = sid
                current = self._segments()
                retired = [s for s in current if s.id in merged]
                keep = [s for s in current if s.id not in merged]
                if live:
                    keep.append(Segment(sid, path, self._stages))
                self._drop_empty_and_publish(keep, {sid}, retired=retired)
            log.info("compacted segments %s into %s (%d chunks)", sorted(merged), sid, len(live))
            return True

    def maybe_compact(self) -> None:
        """Start a background compaction when the policy asks for one and none is running."""
        spec = self.config.compaction
        with self.lease() as snap:
            if not self._plan(snap, full=False):
                return
        if not spec.background:
            self.compact()
            return
        with self._state:
            if self._closed or (self._compactor is not None and self._compactor.is_alive()):
                return
            self._compactor = threading.Thread(
                target=self._compact_logged, name=f"compact-{self.config.name}", daemon=True
            )
            self._compactor.start()

    def _compact_logged(self) -> None:
        try:
            self.compact()
        except Exception:
            log.exception("background compaction of %s failed; the collection is unchanged", self.config.name)

    # -- reads ---------------------------------------------------------------------------

    @property
    def pipeline(self) -> PipelineSpec:
        """The configured pipeline, used when a search names none."""
        return self.config.pipeline

    def check_stages(self, spec: PipelineSpec) -> None:
        """Refuse a pipeline that needs an index this collection does not hold."""
        for s in spec.retrievers:
            if stage_key(s) not in self._keys:
                have = ", ".join(f"{x.retriever}{x.params or ''}" for x in self._stages)
                raise IndexMismatch(
                    f"collection {self.config.name!r} has no {s.retriever} index with params {s.params}; "
                    f"it holds: {have}"
                )

    def search(
        self,
        queries: Sequence[Query],
        pipeline: PipelineSpec | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        with_documents: bool = True,
        rerankers: Sequence[Reranker] = (),
        stage_where: Sequence[Mapping[str, Any] | None] | None = None,
        trace: bool = False,
    ) -> SearchOutput:
        """Run a pipeline over the current snapshot.

        Args:
            queries: the queries (non-empty texts).
            pipeline: a spec whose retriever stages this collection indexes (default: its own).
            k: hits per query.
            where: a metadata filter (:mod:`cascade.api.service.filters`) on every stage.
            with_documents: fetch each hit's chunk (text, title, metadata).
            rerankers: loaded rerankers for the spec's reranker stages (built if None).
            stage_where: one more filter per retriever stage (None: none), in the spec's
                order, on top of ``where``: a chunk enters stage i's list only if it matches
                both (a Qdrant-style prefetch's own ``filter``).
            trace: keep every stage's lists in the output's ``trace`` (ranks per stage).

        Raises:
            IndexMismatch: the pipeline needs an index the collection lacks; InvalidInput: bad filter.
        """
        t0, cpu0 = time.perf_counter(), time.thread_time()
        spec = pipeline or self.config.pipeline
        self.check_stages(spec)
        predicate = compile_filter(where)
        stage_predicates = _stage_predicates(predicate, stage_where, len(spec.retrievers))
        spec = trim_depth(spec, k)
        with self.lease() as snap:
            if not snap.views:
                return SearchOutput([[] for _ in queries], {"total": time.perf_counter() - t0})
            ctx = SnapshotSearch(snap, predicate)
            stages = [ctx.retriever(stage_key(s), p) for s, p in zip(spec.retrievers, stage_predicates, strict=True)]
            pipe = Pipeline(spec, stages, rerankers, docs=ctx)
            out = pipe.search(queries, k, trace)
            t = time.perf_counter()
            hits = self._hits(out.rankings, ctx, with_documents)
            if with_documents:
                out.timings_s["fetch"] = time.perf_counter() - t
        out.timings_s["total"] = time.perf_counter() - t0
        out.timings_s["total_cpu"] = time.thread_time() - cpu0  # this thread's CPU: unaffected by load
        return SearchOutput(hits, out.timings_s, out if trace else None)

    @staticmethod
    def _hits(rankings: Sequence[Ranking], ctx: SnapshotSearch, with_documents: bool) -> list[list[SearchHit]]:
        # one docstore read for every query's hits: a batch of queries pays one round trip per segment
        wanted = list(dict.fromkeys(i for r in rankings for i in r.doc_ids)) if with_documents else []
        docs = {d.id: d for d in ctx.get_many(wanted)} if wanted else {}
        out = []
        for ranking in rankings:
            hits = []
            for chunk_id, score in zip(ranking.doc_ids, ranking.scores, strict=True):
                seg = ctx.origin.get(chunk_id)
                parent = seg.parents[seg.position[chunk_id]] if seg is not None else chunk_id.rpartition("#")[0]
                hits.append(SearchHit(chunk_id, parent, score, docs.get(chunk_id)))
            out.append(hits)
        return out

    def document_ids(self) -> list[str]:
        with self._write:
            return sorted(self._doc_segment)

    def get_document(self, doc_id: str) -> dict[str, Any]:
        with self._write:
            row = self._db.execute(
                "SELECT id, segment, num_chunks, title, metadata FROM docs WHERE id = ?", (doc_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"collection {self.config.name!r} has no document {doc_id!r}")
        return {
            "id": row[0],
            "segment": row[1],
            "num_chunks": row[2],
            "title": row[3],
            "metadata": json.loads(row[4]),
        }

    def info(self) -> dict[str, Any]:
        with self.lease() as snap:
            segs = [
                {"id": v.segment.id, "chunks": len(v.live), "live_chunks": int(v.live.sum())}
                for v in snap.views
            ]
            return {
                "name": self.config.name,
                "num_documents": len(self._doc_segment),
                "num_chunks": snap.num_live,
                "segments": segs,
                "generation": snap.generation,
                "config": self.config.model_dump(mode="json"),
            }

    def _check_open(self) -> None:
        if self._closed:
            raise NotFound(f"collection {self.config.name!r} is closed")

    def close(self) -> None:
        with self._state:
            self._closed = True
            thread = self._compactor
        if thread is not None:
            thread.join()
        with self._write:
            self._db.close()


def _stage_predicates(
    common: Predicate | None, stage_where: Sequence[Mapping[str, Any] | None] | None, n: int
) -> list[Predicate | None]:
    """Per retriever stage: ``common`` and that stage's own filter, both to hold (None: only ``common``)."""
    if stage_where is None:
        return [None] * n
    if len(stage_where) != n:
        raise InvalidInput(f"{len(stage_where)} stage filters for {n} retriever stages")
    out: list[Predicate | None] = []
    for where in stage_where:
        own = compile_filter(where)
        if own is None or common is None:
            out.append(own)
        else:
            out.append(lambda meta, a=common, b=own: a(meta) and b(meta))
    return out


# Test seam: the durability tests kill the process at these points to prove that a crash
# mid-ingest leaves the collection as it was. Production code never sets a hook.
HOOKS: dict[str, Any] = {}


def _hook(point: str) -> None:
    fn = HOOKS.get(point)
    if fn is not None:
        fn()

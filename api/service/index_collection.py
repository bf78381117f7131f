"""Read-only collections: an index directory built by ``cascade index`` (plain or sharded
indexes plus a docstore) served by the service beside the data directory's collections.

It answers what a :class:`~.collection.SegmentedCollection` answers for reads (search with any
pipeline whose retriever stages the directory holds, RAG context, documents, info) and
refuses writes with a 409. Where its indexes are searched is the caller's choice
(``open_index``): loaded in this process, or shard replicas on a Ray cluster
(:mod:`api.ray_serve`).

Example:
    >>> coll = IndexCollection("scifact", "idx/", resolve_pipeline("bm25"))  # doctest: +SKIP
    >>> engine.attach("scifact", coll)                                           # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cascade.indexing.index_set import IndexSet
from cascade.retrieval.base import Reranker
from cascade.retrieval.errors import IndexMismatch, InvalidInput, NotFound
from cascade.retrieval.pipeline import Pipeline, PipelineSpec
from cascade.retrieval.registry import RETRIEVERS
from cascade.retrieval.sharded import ShardedRetriever, shard_paths
from cascade.retrieval.storage import MANIFEST, read_manifest
from cascade.retrieval.types import Query

from .config import SearchHit, SearchOutput, trim_depth

#: Opens one index directory of the index set for searching: anything with ``search(queries, k, **kw)``.
IndexOpener = Callable[[Path], Any]


def load_index(path: str | Path) -> Any:
    """Load an index directory in this process, whatever its kind (sharded ones included)."""
    return RETRIEVERS.get(read_manifest(path).kind).load(path)


def index_dirs(root: str | Path) -> list[Path]:
    """The index directories (one per retriever configuration) of an index set."""
    return sorted(p for p in Path(root).iterdir() if (p / MANIFEST).is_file())


def index_shards(path: str | Path) -> list[Path]:
    """The shard directories of an index: its shards if it is sharded, else itself."""
    if read_manifest(path).kind == ShardedRetriever.kind:
        return shard_paths(path)[1]
    return [Path(path)]


class IndexCollection:
    """Args:
    name: the collection name it is served under.
    root: the index directory (``cascade index --out``), with its ``docstore.sqlite``.
    pipeline: the default pipeline of searches; its stages must be in ``root``.
    open_index: opens an index directory (default: :func:`load_index`, in this process).

    Raises:
        NotFound: ``root`` is not an index directory; IndexMismatch: the pipeline needs an index
        it lacks.
    """

    read_only = True

    def __init__(self, name: str, root: str | Path, pipeline: PipelineSpec, open_index: IndexOpener | None = None):
        self.root = Path(root)
        if not (self.root / "docstore.sqlite").is_file():
            raise NotFound(f"{self.root} is not an index directory built by `cascade index` (no docstore.sqlite)")
        self.name, self.index_set = name, IndexSet(self.root)
        self.docs = self.index_set.docstore()
        self._open = open_index or load_index
        self._indexes: dict[Path, Any] = {}
        self._lock = threading.Lock()
        self.check_stages(pipeline)
        self.pipeline = pipeline
        self._num_docs = len(self.docs)

    def check_stages(self, spec: PipelineSpec) -> None:
        """Refuse a pipeline that needs an index this directory does not hold."""
        for s in spec.retrievers:
            if self.index_set.existing(s) is None:
                have = ", ".join(p.name for p in index_dirs(self.root)) or "nothing"
                raise IndexMismatch(
                    f"collection {self.name!r} has no {s.retriever} index with params {s.params}; "
                    f"{self.root} holds: {have}"
                )

    def _index(self, path: Path) -> Any:
        with self._lock:  # one load per index, even under concurrent first searches
            if path not in self._indexes:
                self._indexes[path] = self._open(path)
            return self._indexes[path]

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
        """Run a pipeline over the directory's indexes; as :meth:`.collection.SegmentedCollection.search`.

        Raises:
            IndexMismatch: the pipeline needs an index the directory lacks; InvalidInput: a filter
            (whole-document indexes built offline carry no filterable catalog).
        """
        t0, cpu0 = time.perf_counter(), time.thread_time()
        if where or any(stage_where or ()):
            raise InvalidInput(f"collection {self.name!r} is a read-only index: metadata filters are not supported")
        spec = trim_depth(pipeline or self.pipeline, k)
        self.check_stages(spec)
        retrievers = [self._index(self.index_set.existing(s)) for s in spec.retrievers]
        out = Pipeline(spec, retrievers, rerankers, docs=self.docs).search(queries, k, trace)
        t = time.perf_counter()
        docs = {}
        if with_documents:
            ids = sorted({d for r in out.rankings for d in r.doc_ids})
            docs = {d.id: d for d in self.docs.get_many(ids, missing_ok=True)}
            out.timings_s["fetch"] = time.perf_counter() - t
        hits = [
            [SearchHit(d, d, s, docs.get(d)) for d, s in zip(r.doc_ids, r.scores, strict=True)]
            for r in out.rankings
        ]
        out.timings_s["total"] = time.perf_counter() - t0
        out.timings_s["total_cpu"] = time.thread_time() - cpu0
        return SearchOutput(hits, out.timings_s, out if trace else None)

    def get_document(self, doc_id: str) -> dict[str, Any]:
        found = self.docs.get_many([doc_id], missing_ok=True)
        if not found:
            raise NotFound(f"collection {self.name!r} has no document {doc_id!r}")
        doc = found[0]
        return {"id": doc.id, "segment": None, "num_chunks": 1, "title": doc.title, "metadata": dict(doc.metadata)}

    def info(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "pipeline": self.pipeline.model_dump(mode="json"),
            "read_only": True,
            "index": str(self.root),
            "indexes": [p.name for p in index_dirs(self.root)],
        }
        return {"name": self.name, "num_documents": self._num_docs, "num_chunks": self._num_docs,
                "segments": [], "generation": 0, "config": config}  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._indexes.clear()
        self.docs.close()

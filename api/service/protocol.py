"""What the engine and the routes need of a collection, whatever kind it is.

Two kinds exist: the data directory's own collections (:class:`~.collection.SegmentedCollection`:
segments, upserts, deletes, compaction) and read-only index directories built offline and
served beside them (:class:`~.index_collection.IndexCollection`). Both answer reads; only the
first is a :class:`WritableCollection`, and the engine refuses writes to any other kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cascade.retrieval.base import Reranker
from cascade.retrieval.pipeline import PipelineSpec
from cascade.retrieval.types import Document, Query

from .config import IngestResult, SearchOutput


@runtime_checkable
class Collection(Protocol):
    """A searchable set of documents with a default pipeline."""

    name: str
    root: Path
    read_only: bool

    @property
    def pipeline(self) -> PipelineSpec:
        """The pipeline a search uses when the request names none."""
        ...

    def check_stages(self, spec: PipelineSpec) -> None:
        """Refuse (IndexMismatch) a pipeline that needs an index the collection lacks."""
        ...

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
        """``stage_where``: one more filter per retriever stage, on top of ``where``. ``trace``:
        keep every stage's lists in the output's ``trace`` (each hit's rank per stage)."""
        ...

    def get_document(self, doc_id: str) -> dict[str, Any]: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@runtime_checkable
class WritableCollection(Collection, Protocol):
    """A collection that takes writes: each acknowledged write is durable when it returns."""

    def upsert(self, docs: Iterable[Document]) -> IngestResult: ...

    def delete(self, ids: Sequence[str] | None = None, where: Mapping[str, Any] | None = None) -> int: ...

    def compact(self, full: bool = False) -> bool: ...

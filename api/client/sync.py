"""The blocking client: :class:`CascadeClient`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from cascade.retrieval.types import Document

from . import _core as core
from ._core import httpx
from .types import (
    AnswerEvent,
    CollectionInfo,
    CompactResult,
    Context,
    EmbeddingsResult,
    IngestResult,
    RerankResult,
    SearchResponse,
    StoredDocument,
)

DocumentLike = Document | Mapping[str, Any]
Pipeline = str | Mapping[str, Any] | None


class CascadeClient:
    """A client for a Cascade server (``cascade serve``): one method per route.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer KEY``.
        timeout: seconds per request (connect, read, write).
        headers: extra headers for every request.
        transport: an httpx transport (e.g. ``httpx.ASGITransport`` or ``httpx.MockTransport``).

    Every failure raises :class:`CascadeAPIError`. Use it as a context manager, or call
    :meth:`close`.

    Example:
        >>> with CascadeClient("http://127.0.0.1:8000", api_key="...") as client:
        ...     client.create_collection("notes", pipeline="bm25")
        ...     client.ingest("notes", [{"id": "a", "text": "stem cells become neurons"}])
        ...     for hit in client.search("notes", "stem cells", k=5).hits:
        ...         print(hit.rank, hit.id, hit.score, hit.title)
    """

    def __init__(
        self,
        base_url: str = core.DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        headers: Mapping[str, str] | None = None,
        transport: Any = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=core.headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CascadeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, call: core.Call) -> Any:
        try:
            resp = self._http.request(call.method, call.path, **call.kwargs())
        except httpx.HTTPError as e:
            raise core.transport_error(e) from e
        return call.parse(core.decode(resp))

    # -- collections -------------------------------------------------------------------

    def create_collection(
        self, name: str, pipeline: Pipeline = None, chunking: Mapping[str, Any] | None = None,
        compaction: Mapping[str, Any] | None = None,
    ) -> CollectionInfo:  # fmt: skip
        """Create a collection: ``pipeline`` is a preset name (default ``bm25``) or an inline
        spec; ``chunking`` e.g. ``{"max_tokens": 256, "overlap": 32}``.

        Example: ``client.create_collection("notes", pipeline="bm25", chunking={"max_tokens": 128})``
        """
        return self._call(core.create_collection(name, pipeline, chunking, compaction))

    def list_collections(self) -> list[str]:
        """The names of the collections this key may use."""
        return self._call(core.list_collections())

    def get_collection(self, name: str) -> CollectionInfo:
        """A collection's documents, chunks, segments and configuration."""
        return self._call(core.get_collection(name))

    def drop_collection(self, name: str) -> None:
        """Delete a collection and everything in it."""
        self._call(core.drop_collection(name))

    # -- documents ---------------------------------------------------------------------

    def ingest(
        self, collection: str, documents: Iterable[DocumentLike], *, batch_size: int = core.BATCH_DOCS,
        batch_bytes: int = core.BATCH_BYTES,
    ) -> IngestResult:  # fmt: skip
        """Add or replace documents from any iterable (dicts with ``id``, ``text``, optional
        ``title`` and ``metadata``, or :class:`~cascade.retrieval.types.Document`), sent as
        NDJSON in requests of ``batch_size`` documents: a generator is consumed lazily, one
        batch in memory at a time. Returns the totals over all requests.

        Example: ``client.ingest("notes", ({"id": str(i), "text": t} for i, t in enumerate(lines)))``
        """
        core.check_documents(documents)
        total, batcher = IngestResult(collection), core.Batcher(batch_size, batch_bytes)
        for doc in documents:
            if (body := batcher.add(doc)) is not None:
                total = total.plus(self._call(core.ingest_batch(collection, body)))
        if (body := batcher.flush()) is not None:
            total = total.plus(self._call(core.ingest_batch(collection, body)))
        return total

    def upload_files(
        self, collection: str, files: Iterable[str | os.PathLike | tuple[str, bytes]]
    ) -> IngestResult:
        """Upload files (paths, or ``(filename, bytes)``): .json .jsonl .csv .tsv .txt .md .html.

        Example: ``client.upload_files("notes", ["faq.md", ("rows.csv", b"id,text\\n1,hello\\n")])``
        """
        return IngestResult(collection).plus(self._call(core.upload_files(collection, files)))

    def delete(
        self, collection: str, ids: Iterable[str] | None = None, filter: Mapping[str, Any] | None = None
    ) -> int:
        """Delete documents by id and/or metadata filter; returns how many were deleted.

        Example: ``client.delete("notes", filter={"year": {"$lt": 2000}})``
        """
        return self._call(core.delete(collection, ids, filter))

    def get_document(self, collection: str, doc_id: str) -> StoredDocument:
        """A stored document's record: id, title, metadata, segment, number of chunks."""
        return self._call(core.get_document(collection, doc_id))

    def compact(self, collection: str) -> CompactResult:
        """Merge the collection's segments into one now."""
        return self._call(core.compact(collection))

    # -- search and RAG ----------------------------------------------------------------

    def search(
        self, collection: str, query: str | Sequence[str], *, k: int | None = 10, pipeline: Pipeline = None,
        filter: Mapping[str, Any] | None = None, fields: Sequence[str] | None = ("title", "text", "metadata"),
    ) -> SearchResponse:  # fmt: skip
        """Search with one query (``.hits``) or many (``.results``, one per query, in order).

        Example:
            >>> r = client.search("notes", "stem cells", k=5, filter={"year": {"$gte": 2020}})
            >>> [(h.id, h.score) for h in r.hits]
        """
        return self._call(core.search(collection, query, k, pipeline, filter, fields))

    def context(
        self, collection: str, query: str, *, k: int | None = None, pipeline: Pipeline = None,
        filter: Mapping[str, Any] | None = None, max_tokens: int | None = None, tokenizer: str | None = None,
        dedup_threshold: float | None = None,
    ) -> Context:  # fmt: skip
        """The best passages packed into ``max_tokens``, numbered for citation.

        Example: ``prompt = client.context("notes", "what do stem cells become?", max_tokens=512).text``
        """
        opts = dict(k=k, pipeline=pipeline, filter=filter, max_tokens=max_tokens, tokenizer=tokenizer,
                    dedup_threshold=dedup_threshold)  # fmt: skip
        return self._call(core.context(collection, query, **opts))

    def answer(
        self, collection: str, query: str, *, k: int | None = None, pipeline: Pipeline = None,
        filter: Mapping[str, Any] | None = None, max_tokens: int | None = None, tokenizer: str | None = None,
        temperature: float | None = None, max_answer_tokens: int | None = None,
    ) -> Iterator[AnswerEvent]:  # fmt: skip
        """Stream an LLM's answer over the context (the server needs ``--llm-base-url``):
        a ``citations`` event, ``delta`` events, then ``done``. The request is sent when
        iteration starts.

        Example:
            >>> for ev in client.answer("notes", "what do stem cells become?"):
            ...     print(ev.text, end="") if ev.event == "delta" else None
        """
        body = core.answer_body(collection, query, k=k, pipeline=pipeline, filter=filter, max_tokens=max_tokens,
                                tokenizer=tokenizer, temperature=temperature, max_answer_tokens=max_answer_tokens)  # fmt: skip
        try:
            with self._http.stream("POST", "/v1/answer", json=body) as resp:
                if not resp.is_success:
                    resp.read()
                    core.check(resp)
                reader = core.SSEReader()
                for line in resp.iter_lines():
                    if (event := reader.feed(line)) is not None:
                        yield event
                if (event := reader.close()) is not None:
                    yield event
        except httpx.HTTPError as e:
            raise core.transport_error(e) from e

    # -- models ------------------------------------------------------------------------

    def rerank(
        self, query: str, documents: Sequence[str | DocumentLike], model: str | None = None,
        top_n: int | None = None,
    ) -> list[RerankResult]:  # fmt: skip
        """Score ``documents`` (texts, dicts with ``text``, or Documents) against ``query``
        with a reranker the server serves (``model``: its alias, checkpoint or family; default:
        the first served); best first, ``index`` into ``documents``.

        Example: ``best = client.rerank("stem cells", ["a text", "another"], top_n=1)[0].index``
        """
        if not documents:
            return []
        return self._call(core.rerank(query, documents, model, top_n))

    def embeddings(
        self, input: str | Sequence[str], model: str, dimensions: int | None = None
    ) -> EmbeddingsResult:
        """Vectors from an embedder the server serves (OpenAI's ``/v1/embeddings``);
        ``dimensions`` keeps the first coordinates.

        Example: ``vec = client.embeddings("stem cells", "sentence-transformers/all-MiniLM-L6-v2").vectors[0]``
        """
        return self._call(core.embeddings(input, model, dimensions))

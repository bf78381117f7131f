"""The asyncio client: :class:`AsyncCascadeClient`, the same methods as
:class:`~cascade.api.client.CascadeClient`, awaited."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from . import _core as core
from ._core import httpx
from .sync import DocumentLike, Pipeline
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


class AsyncCascadeClient:
    """The asyncio twin of :class:`~cascade.api.client.CascadeClient` (same arguments, same
    methods and results, awaited; :meth:`answer` is an async iterator and :meth:`ingest`
    also takes an async iterable).

    Example:
        >>> async with AsyncCascadeClient("http://127.0.0.1:8000") as client:
        ...     hits = (await client.search("notes", "stem cells", k=5)).hits
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
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=core.headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCascadeClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _call(self, call: core.Call) -> Any:
        try:
            resp = await self._http.request(call.method, call.path, **call.kwargs())
        except httpx.HTTPError as e:
            raise core.transport_error(e) from e
        return call.parse(core.decode(resp))

    async def create_collection(
        self, name: str, pipeline: Pipeline = None, chunking: Mapping[str, Any] | None = None,
        compaction: Mapping[str, Any] | None = None,
    ) -> CollectionInfo:  # fmt: skip
        """See :meth:`CascadeClient.create_collection`."""
        return await self._call(core.create_collection(name, pipeline, chunking, compaction))

    async def list_collections(self) -> list[str]:
        return await self._call(core.list_collections())

    async def get_collection(self, name: str) -> CollectionInfo:
        return await self._call(core.get_collection(name))

    async def drop_collection(self, name: str) -> None:
        await self._call(core.drop_collection(name))

    async def ingest(
        self, collection: str, documents: Iterable[DocumentLike] | AsyncIterable[DocumentLike], *,
        batch_size: int = core.BATCH_DOCS, batch_bytes: int = core.BATCH_BYTES,
    ) -> IngestResult:  # fmt: skip
        """See :meth:`CascadeClient.ingest`; ``documents`` may also be an async iterable.

        Example: ``await client.ingest("notes", read_rows_async())``
        """
        core.check_documents(documents)
        total, batcher = IngestResult(collection), core.Batcher(batch_size, batch_bytes)
        async for doc in _aiter(documents):
            if (body := batcher.add(doc)) is not None:
                total = total.plus(await self._call(core.ingest_batch(collection, body)))
        if (body := batcher.flush()) is not None:
            total = total.plus(await self._call(core.ingest_batch(collection, body)))
        return total

    async def upload_files(
        self, collection: str, files: Iterable[str | os.PathLike | tuple[str, bytes]]
    ) -> IngestResult:
        return IngestResult(collection).plus(await self._call(core.upload_files(collection, files)))

    async def delete(
        self, collection: str, ids: Iterable[str] | None = None, filter: Mapping[str, Any] | None = None
    ) -> int:
        return await self._call(core.delete(collection, ids, filter))

    async def get_document(self, collection: str, doc_id: str) -> StoredDocument:
        return await self._call(core.get_document(collection, doc_id))

    async def compact(self, collection: str) -> CompactResult:
        return await self._call(core.compact(collection))

    async def search(
        self, collection: str, query: str | Sequence[str], *, k: int | None = 10, pipeline: Pipeline = None,
        filter: Mapping[str, Any] | None = None, fields: Sequence[str] | None = ("title", "text", "metadata"),
    ) -> SearchResponse:  # fmt: skip
        """See :meth:`CascadeClient.search`.

        Example: ``hits = (await client.search("notes", "stem cells", k=5)).hits``
        """
        return await self._call(core.search(collection, query, k, pipeline, filter, fields))

    async def context(
        self, collection: str, query: str, *, k: int | None = None, pipeline: Pipeline = None,
        filter: Mapping[str, Any] | None = None, max_tokens: int | None = None, tokenizer: str | None = None,
        dedup_threshold: float | None = None,
    ) -> Context:  # fmt: skip
        opts = dict(k=k, pipeline=pipeline, filter=filter, max_tokens=max_tokens, tokenizer=tokenizer,
                    dedup_threshold=dedup_threshold)  # fmt: skip
        return await self._call(core.context(collection, query, **opts))

    async def answer(
        self, collection: str, query: str, *, k: int | None = None, pipeline: Pipeline = None,
        filter: Mapping[str, Any] | None = None, max_tokens: int | None = None, tokenizer: str | None = None,
        temperature: float | None = None, max_answer_tokens: int | None = None,
    ) -> AsyncIterator[AnswerEvent]:  # fmt: skip
        """See :meth:`CascadeClient.answer`.

        Example: ``text = "".join([e.text async for e in client.answer("notes", "q") if e.event == "delta"])``
        """
        body = core.answer_body(collection, query, k=k, pipeline=pipeline, filter=filter, max_tokens=max_tokens,
                                tokenizer=tokenizer, temperature=temperature, max_answer_tokens=max_answer_tokens)  # fmt: skip
        try:
            async with self._http.stream("POST", "/v1/answer", json=body) as resp:
                if not resp.is_success:
                    await resp.aread()
                    core.check(resp)
                reader = core.SSEReader()
                async for line in resp.aiter_lines():
                    if (event := reader.feed(line)) is not None:
                        yield event
                if (event := reader.close()) is not None:
                    yield event
        except httpx.HTTPError as e:
            raise core.transport_error(e) from e

    async def rerank(
        self, query: str, documents: Sequence[str | DocumentLike], model: str | None = None,
        top_n: int | None = None,
    ) -> list[RerankResult]:  # fmt: skip
        if not documents:
            return []
        return await self._call(core.rerank(query, documents, model, top_n))

    async def embeddings(
        self, input: str | Sequence[str], model: str, dimensions: int | None = None
    ) -> EmbeddingsResult:
        return await self._call(core.embeddings(input, model, dimensions))


async def _aiter(items):
    if hasattr(items, "__aiter__"):
        async for x in items:
            yield x
    else:
        for x in items:
            yield x

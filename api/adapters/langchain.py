"""LangChain over a Cascade server (extra ``langchain``): :class:`CascadeRetriever` searches a
collection, :class:`CascadeRerank` reranks documents through ``/v1/rerank``.

A hit becomes ``Document(id=hit.id, page_content=hit.text, metadata={**hit.metadata,
"doc_id", "title", "rank", "score"})``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cascade.retrieval.errors import require

require("langchain_core", "langchain")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
    Callbacks,
)
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr  # noqa: E402

from cascade.api.client import AsyncCascadeClient, CascadeClient, Hit  # noqa: E402

from ._common import DEFAULT_URL, FIELDS, async_client, hit_metadata, sync_client  # noqa: E402


def to_document(hit: Hit) -> Document:
    return Document(
        id=hit.id, page_content=hit.text or "", metadata={**hit_metadata(hit), "score": hit.score}
    )


class _Connected:
    """The server settings both classes take, and their clients."""

    def _key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None

    def _sync(self) -> CascadeClient:
        if self._client is None:
            self._client = sync_client(self.client, self.base_url, self._key(), self.timeout)
        return self._client

    def _async(self) -> tuple[AsyncCascadeClient, bool]:
        """(client, whether this call owns it and must close it)."""
        if self.async_client is not None:
            return self.async_client, False
        return async_client(self.base_url, self._key(), self.timeout), True


class CascadeRetriever(_Connected, BaseRetriever):
    """A LangChain retriever over one collection of a Cascade server.

    Args:
        collection: the collection to search.
        k: documents per query.
        pipeline: a preset name or inline spec (default: the collection's).
        filter: a Cascade metadata filter, e.g. ``{"year": {"$gte": 2020}}``.
        base_url, api_key, timeout: the server (or pass ``client`` / ``async_client``).

    Example:
        >>> retriever = CascadeRetriever(collection="notes", k=5, base_url="http://127.0.0.1:8000")
        >>> docs = retriever.invoke("what do stem cells become?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: str
    k: int = 10
    pipeline: str | dict[str, Any] | None = None
    filter: dict[str, Any] | None = None
    base_url: str = DEFAULT_URL
    api_key: SecretStr | None = None
    timeout: float = 60.0
    client: CascadeClient | None = Field(default=None, exclude=True)
    async_client: AsyncCascadeClient | None = Field(default=None, exclude=True)
    _client: CascadeClient | None = PrivateAttr(default=None)

    def _args(self) -> dict[str, Any]:
        return {"k": self.k, "pipeline": self.pipeline, "filter": self.filter, "fields": FIELDS}

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [to_document(h) for h in self._sync().search(self.collection, query, **self._args()).hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        client, owned = self._async()
        try:
            hits = (await client.search(self.collection, query, **self._args())).hits
        finally:
            if owned:
                await client.aclose()
        return [to_document(h) for h in hits]


class CascadeRerank(_Connected, BaseDocumentCompressor):
    """A LangChain document compressor that reorders documents with a reranker of the server
    (``/v1/rerank``); each kept document gains ``metadata["relevance_score"]``.

    Args:
        model: a reranker the server serves (alias, checkpoint or family; default: its first).
        top_n: documents to keep (default: all, reordered).

    Example:
        >>> rerank = CascadeRerank(model="ce", top_n=3)
        >>> best = rerank.compress_documents(docs, "what do stem cells become?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | None = None
    top_n: int | None = None
    base_url: str = DEFAULT_URL
    api_key: SecretStr | None = None
    timeout: float = 60.0
    client: CascadeClient | None = Field(default=None, exclude=True)
    async_client: AsyncCascadeClient | None = Field(default=None, exclude=True)
    _client: CascadeClient | None = PrivateAttr(default=None)

    @staticmethod
    def _reorder(documents: Sequence[Document], results) -> list[Document]:
        out = []
        for r in results:
            d = documents[r.index]
            out.append(Document(id=d.id, page_content=d.page_content,
                                metadata={**d.metadata, "relevance_score": r.score}))  # fmt: skip
        return out

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        texts = [d.page_content for d in documents]
        return self._reorder(documents, self._sync().rerank(query, texts, self.model, self.top_n))

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        client, owned = self._async()
        try:
            results = await client.rerank(query, [d.page_content for d in documents], self.model, self.top_n)
        finally:
            if owned:
                await client.aclose()
        return self._reorder(documents, results)

"""LlamaIndex over a Cascade server (extra ``llamaindex``): :class:`CascadeRetriever` searches a
collection, :class:`CascadeRerank` reranks nodes through ``/v1/rerank``.

A hit becomes ``NodeWithScore(node=TextNode(id_=hit.id, text=hit.text, metadata={**hit.metadata,
"doc_id", "title", "rank"}), score=hit.score)``; the node's source (``ref_doc_id``) is
``hit.doc_id``, and ``doc_id`` and ``rank`` are kept out of the text the LLM and embedders see.
"""

from __future__ import annotations

from typing import Any

from cascade.retrieval.errors import require

require("llama_index.core", "llamaindex")

from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import (  # noqa: E402
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from pydantic import Field, PrivateAttr  # noqa: E402

from cascade.api.client import AsyncCascadeClient, CascadeClient, Hit, RerankResult  # noqa: E402

from ._common import DEFAULT_URL, FIELDS, async_client, hit_metadata, sync_client  # noqa: E402

_HIDDEN = ["doc_id", "rank"]


def to_node(hit: Hit) -> NodeWithScore:
    node = TextNode(
        id_=hit.id, text=hit.text or "", metadata=hit_metadata(hit),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.doc_id)},
        excluded_llm_metadata_keys=list(_HIDDEN), excluded_embed_metadata_keys=list(_HIDDEN),
    )  # fmt: skip
    return NodeWithScore(node=node, score=hit.score)


class CascadeRetriever(BaseRetriever):
    """A LlamaIndex retriever over one collection of a Cascade server.

    Args:
        collection: the collection to search.
        k: nodes per query.
        pipeline: a preset name or inline spec (default: the collection's).
        filter: a Cascade metadata filter, e.g. ``{"year": {"$gte": 2020}}``.
        base_url, api_key, timeout: the server (or pass ``client`` / ``async_client``).

    Example:
        >>> retriever = CascadeRetriever("notes", k=5, base_url="http://127.0.0.1:8000")
        >>> nodes = retriever.retrieve("what do stem cells become?")
    """

    def __init__(
        self,
        collection: str,
        *,
        k: int = 10,
        pipeline: str | dict[str, Any] | None = None,
        filter: dict[str, Any] | None = None,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 60.0,
        client: CascadeClient | None = None,
        async_client: AsyncCascadeClient | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ):
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.collection, self.k, self.pipeline, self.filter = collection, k, pipeline, filter
        self.base_url, self.timeout, self._api_key = base_url, timeout, api_key
        self._client, self._async_client = client, async_client

    def _args(self) -> dict[str, Any]:
        return {"k": self.k, "pipeline": self.pipeline, "filter": self.filter, "fields": FIELDS}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self._client is None:
            self._client = sync_client(None, self.base_url, self._api_key, self.timeout)
        hits = self._client.search(self.collection, query_bundle.query_str, **self._args()).hits
        return [to_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        client = self._async_client or async_client(self.base_url, self._api_key, self.timeout)
        try:
            hits = (await client.search(self.collection, query_bundle.query_str, **self._args())).hits
        finally:
            if client is not self._async_client:
                await client.aclose()
        return [to_node(h) for h in hits]


class CascadeRerank(BaseNodePostprocessor):
    """A LlamaIndex node postprocessor that reorders nodes with a reranker of the server
    (``/v1/rerank``, over each node's text without metadata); scores become the reranker's.

    Args:
        model: a reranker the server serves (alias, checkpoint or family; default: its first).
        top_n: nodes to keep (default: all, reordered).

    Example:
        >>> rerank = CascadeRerank(model="ce", top_n=3)
        >>> best = rerank.postprocess_nodes(nodes, query_str="what do stem cells become?")
    """

    model: str | None = None
    top_n: int | None = None
    base_url: str = DEFAULT_URL
    api_key: str | None = Field(default=None, exclude=True, repr=False)  # never serialized
    timeout: float = 60.0
    client: CascadeClient | None = Field(default=None, exclude=True)
    async_client: AsyncCascadeClient | None = Field(default=None, exclude=True)
    _own: CascadeClient | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "CascadeRerank"

    @staticmethod
    def _texts(nodes: list[NodeWithScore]) -> list[str]:
        return [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]

    @staticmethod
    def _reorder(nodes: list[NodeWithScore], results: list[RerankResult]) -> list[NodeWithScore]:
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in results]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("CascadeRerank needs the query (query_bundle or query_str)")
        if not nodes:
            return []
        if self.client is None and self._own is None:
            self._own = sync_client(None, self.base_url, self.api_key, self.timeout)
        client = self.client or self._own
        return self._reorder(
            nodes, client.rerank(query_bundle.query_str, self._texts(nodes), self.model, self.top_n)
        )

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("CascadeRerank needs the query (query_bundle or query_str)")
        if not nodes:
            return []
        client = self.async_client or async_client(self.base_url, self.api_key, self.timeout)
        try:
            results = await client.rerank(query_bundle.query_str, self._texts(nodes), self.model, self.top_n)
        finally:
            if client is not self.async_client:
                await client.aclose()
        return self._reorder(nodes, results)

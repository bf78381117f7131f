"""Haystack over a Cascade server (extra ``haystack``): :class:`CascadeRetriever`, a pipeline
component that searches a collection.

A hit becomes ``Document(id=hit.id, content=hit.text, meta={**hit.metadata, "doc_id",
"title", "rank"}, score=hit.score)``.
"""

from __future__ import annotations

from typing import Any

from cascade.retrieval.errors import require

require("haystack", "haystack")

from haystack import Document, component, default_from_dict, default_to_dict  # noqa: E402
from haystack.utils import Secret, deserialize_secrets_inplace  # noqa: E402

from cascade.api.client import CascadeClient, Hit  # noqa: E402

from ._common import DEFAULT_URL, FIELDS, async_client, hit_metadata, sync_client  # noqa: E402

_COMPARISONS = {"==": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte",
                "in": "$in", "not in": "$nin"}  # fmt: skip
_LOGICAL = {"AND": "$and", "OR": "$or"}


def to_document(hit: Hit) -> Document:
    return Document(id=hit.id, content=hit.text or "", meta=hit_metadata(hit), score=hit.score)


def cascade_filter(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Haystack 2 filter (``{"field": "meta.year", "operator": ">=", "value": 2020}``,
    ``{"operator": "AND", "conditions": [...]}``) as a Cascade filter; a dict without an
    ``operator`` key is taken to be a Cascade filter already. ``NOT`` has no Cascade form.

    Raises:
        ValueError: an operator Cascade cannot express.
    """
    if not filters or "operator" not in filters:
        return filters or None
    op = filters["operator"]
    if "conditions" in filters:
        if op not in _LOGICAL:
            raise ValueError(f"filter operator {op!r} is not supported; use AND or OR")
        return {_LOGICAL[op]: [cascade_filter(c) for c in filters["conditions"]]}
    if op not in _COMPARISONS:
        raise ValueError(f"filter operator {op!r} is not supported; use one of {', '.join(_COMPARISONS)}")
    field = filters["field"]
    return {field.removeprefix("meta."): {_COMPARISONS[op]: filters["value"]}}


@component
class CascadeRetriever:
    """A Haystack retriever component over one collection of a Cascade server.

    Args:
        collection: the collection to search.
        base_url: the server.
        api_key: a Haystack ``Secret`` (default: the ``CASCADE_API_KEY`` environment variable, if set).
        top_k: documents per query.
        pipeline: a preset name or inline spec (default: the collection's).
        filters: a Haystack or Cascade filter; ``run(filters=...)`` replaces it.
        timeout: seconds per request.

    Haystack 3 loads pipeline files only from trusted modules: pass
    ``allowed_modules=["cascade.api.adapters.haystack"]`` to ``Pipeline.load``/``loads``.

    Example:
        >>> retriever = CascadeRetriever("notes", base_url="http://127.0.0.1:8000", top_k=5)
        >>> docs = retriever.run(query="what do stem cells become?")["documents"]
    """

    def __init__(
        self,
        collection: str,
        base_url: str = DEFAULT_URL,
        api_key: Secret | None = Secret.from_env_var("CASCADE_API_KEY", strict=False),  # noqa: B008
        top_k: int = 10,
        pipeline: str | dict[str, Any] | None = None,
        filters: dict[str, Any] | None = None,
        timeout: float = 60.0,
    ):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.collection, self.base_url, self.api_key = collection, base_url, api_key
        self.top_k, self.pipeline, self.filters, self.timeout = top_k, pipeline, filters, timeout
        self._client: CascadeClient | None = None

    def _key(self) -> str | None:
        return self.api_key.resolve_value() if self.api_key is not None else None

    def _args(self, top_k: int | None, filters: dict[str, Any] | None) -> dict[str, Any]:
        chosen = filters if filters is not None else self.filters
        return {
            "k": top_k or self.top_k,
            "pipeline": self.pipeline,
            "filter": cascade_filter(chosen),
            "fields": FIELDS,
        }

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self, collection=self.collection, base_url=self.base_url,
            api_key=self.api_key.to_dict() if self.api_key is not None else None, top_k=self.top_k,
            pipeline=self.pipeline, filters=self.filters, timeout=self.timeout,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CascadeRetriever:
        data = {**data, "init_parameters": dict(data.get("init_parameters", {}))}  # the caller's stays as is
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None, filters: dict[str, Any] | None = None):
        """Search ``query``; ``top_k`` and ``filters`` override the component's for this call."""
        if self._client is None:
            self._client = sync_client(None, self.base_url, self._key(), self.timeout)
        hits = self._client.search(self.collection, query, **self._args(top_k, filters)).hits
        return {"documents": [to_document(h) for h in hits]}

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str, top_k: int | None = None, filters: dict[str, Any] | None = None):
        async with async_client(self.base_url, self._key(), self.timeout) as client:
            hits = (await client.search(self.collection, query, **self._args(top_k, filters))).hits
        return {"documents": [to_document(h) for h in hits]}

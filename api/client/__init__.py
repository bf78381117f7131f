"""A Python client for the Cascade REST API: :class:`CascadeClient` (blocking) and
:class:`AsyncCascadeClient` (asyncio), over httpx (the ``serve`` extra).

One method per route; every failure raises :class:`CascadeAPIError` (``status``, ``type``,
``message``, ``body``); results are small dataclasses (:class:`Hit`, :class:`SearchResponse`, ...).

Example:
    >>> from cascade.api.client import CascadeClient
    >>> client = CascadeClient("http://127.0.0.1:8000", api_key="...")
    >>> for hit in client.search("notes", "stem cells", k=5).hits:
    ...     print(hit.rank, hit.id, round(hit.score, 3), hit.title)
"""

from .aio import AsyncCascadeClient
from .sync import CascadeClient
from .types import (
    AnswerEvent,
    CascadeAPIError,
    Citation,
    CollectionInfo,
    CompactResult,
    Context,
    EmbeddingsResult,
    Hit,
    IngestResult,
    QueryResult,
    RerankResult,
    SearchResponse,
    SegmentInfo,
    StoredDocument,
)

__all__ = [
    "AnswerEvent",
    "AsyncCascadeClient",
    "CascadeAPIError",
    "CascadeClient",
    "Citation",
    "CollectionInfo",
    "CompactResult",
    "Context",
    "EmbeddingsResult",
    "Hit",
    "IngestResult",
    "QueryResult",
    "RerankResult",
    "SearchResponse",
    "SegmentInfo",
    "StoredDocument",
]

"""What the adapters share: a client from the adapter's settings, and one hit-to-metadata mapping."""

from __future__ import annotations

from typing import Any

from cascade.api.client import AsyncCascadeClient, CascadeClient, Hit
from cascade.api.client._core import DEFAULT_URL

__all__ = ["DEFAULT_URL", "FIELDS", "async_client", "hit_metadata", "sync_client"]

#: Fields every adapter asks the search for.
FIELDS = ("title", "text", "metadata")


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """The document's metadata plus the hit's ``doc_id``, ``title`` and ``rank`` (these three
    win over metadata keys of the same name)."""
    return {**(hit.metadata or {}), "doc_id": hit.doc_id, "title": hit.title or "", "rank": hit.rank}


def sync_client(
    given: CascadeClient | None, base_url: str, api_key: str | None, timeout: float
) -> CascadeClient:
    return given if given is not None else CascadeClient(base_url, api_key, timeout)


def async_client(base_url: str, api_key: str | None, timeout: float) -> AsyncCascadeClient:
    """A fresh async client, for one call (an httpx AsyncClient belongs to one event loop)."""
    return AsyncCascadeClient(base_url, api_key, timeout)

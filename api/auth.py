"""Optional API keys, each scoped to a list of collections (or ``*``)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from cascade.retrieval.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``collections`` is None when every collection is allowed."""

    collections: frozenset[str] | None

    def allows(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def check(self, collection: str) -> None:
        if not self.allows(collection):
            raise Forbidden(f"this API key may not use collection {collection!r}")


async def principal(request: Request) -> Principal:
    """The dependency every /v1 route takes (async: a sync one would cost a thread hop per
    request). Keys come as ``Authorization: Bearer KEY`` or
    ``X-API-Key: KEY``."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return Principal(None)
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    if not given:
        raise Unauthorized("missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    match = None
    for key, scopes in keys.items():  # compare against every key, in constant time each
        if hmac.compare_digest(key.encode(), given.encode()):
            match = scopes
    if match is None:
        raise Unauthorized("invalid API key")
    return Principal(None if "*" in match else frozenset(match))


#: The caller, as a route parameter: ``who: Caller``.
Caller = Annotated[Principal, Depends(principal)]

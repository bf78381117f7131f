"""Concurrent searches that ask the same thing of the same collection (pipeline, k, filter,
whether documents are wanted) run as one engine call: one batch of queries through the
retrievers, one worker thread, one snapshot lease, instead of one of each per request.

The batching is natural, as in inference servers: a search that finds no call of its kind
running starts one at once (so an idle server adds no wait), and searches that arrive while
it runs wait for it to end and go together in the next call. Each request still gets exactly
its own hits; what is shared is the engine's per-call work (pipeline resolution, the lease,
the query matrix, the kernel call, the hop to a worker thread), which dominates a cheap search.

A batch that fails is run again one request at a time, so each request gets the answer (or
the error) it would have got alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from .concurrency import run_search
from .service.config import SearchOutput

MAX_BATCH_QUERIES = 64  # one call's queries at most: a larger batch only delays its first answer


@dataclass
class _Waiting:
    texts: Sequence[str]
    request: Request
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _key(
    collection: str, pipeline: Any, k: int, where: Mapping[str, Any] | None, with_documents: bool
) -> tuple:
    frozen = [p if p is None or isinstance(p, str) else json.dumps(p, sort_keys=True, default=str)
              for p in (pipeline, where)]  # fmt: skip
    return collection, *frozen, k, with_documents


class SearchBatcher:
    """One per app (``app.state.search_batcher``), used from the event loop only."""

    def __init__(self, max_queries: int = MAX_BATCH_QUERIES):
        self.max_queries = max_queries
        self._pending: dict[tuple, list[_Waiting]] = {}
        self._tasks: set[asyncio.Task] = set()
        self.calls = self.searches = 0  # engine calls made and searches they answered

    async def search(self, request: Request, collection: str, texts: Sequence[str], pipeline: Any, k: int,
                     where: Mapping[str, Any] | None, with_documents: bool) -> tuple[Any, SearchOutput]:  # fmt: skip
        """What ``engine.search(collection, texts, pipeline, k, where, with_documents)`` returns
        for these texts, run together with concurrent searches of the same kind."""
        key = _key(collection, pipeline, k, where, with_documents)
        me = _Waiting(list(texts), request)
        queue = self._pending.get(key)
        if queue is None:  # nothing of this kind running: start the calls, this one first
            self._pending[key] = [me]
            task = asyncio.create_task(self._drain(key, (collection, pipeline, k, where, with_documents)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            queue.append(me)
        # shielded: a client that goes away cancels its wait, not the call others share
        return await asyncio.shield(me.future)

    async def _drain(self, key: tuple, args: tuple) -> None:
        """Run calls for ``key`` while searches of its kind are waiting, then stop."""
        try:
            while queue := self._pending[key]:
                batch, n = [], 0
                while queue and (not batch or n + len(queue[0].texts) <= self.max_queries):
                    batch.append(queue.pop(0))
                    n += len(batch[-1].texts)
                await self._run(batch, args)
        finally:
            del self._pending[key]

    async def _run(self, batch: list[_Waiting], args: tuple) -> None:
        collection, pipeline, k, where, with_documents = args
        engine = batch[0].request.app.state.engine
        texts = [t for w in batch for t in w.texts]
        self.calls, self.searches = self.calls + 1, self.searches + len(batch)
        try:
            spec, out = await run_search(batch[0].request, engine.search, collection, texts, pipeline, k, where,
                                         with_documents)  # fmt: skip
        except Exception as e:
            if len(batch) == 1:
                _settle(batch[0].future, exception=e)
            else:  # each alone: an error that belongs to one request stays its own
                for w in batch:
                    await self._run([w], args)
            return
        start = 0
        for w in batch:
            hits = out.hits[start : start + len(w.texts)]
            start += len(w.texts)
            _settle(w.future, result=(spec, SearchOutput(hits, dict(out.timings_s))))


def _settle(future: asyncio.Future, result: Any = None, exception: BaseException | None = None) -> None:
    if future.done():  # its request was cancelled
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


async def batched_search(request: Request, collection: str, texts: Sequence[str], pipeline: Any, k: int,
                         where: Mapping[str, Any] | None, with_documents: bool) -> tuple[Any, SearchOutput]:  # fmt: skip
    state = request.app.state
    batcher = getattr(state, "search_batcher", None)
    if batcher is None:  # created inside the running loop, once
        batcher = state.search_batcher = SearchBatcher()
    return await batcher.search(request, collection, texts, pipeline, k, where, with_documents)

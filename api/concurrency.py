"""Blocking work off the event loop. Searches and model calls run in worker threads under
one capacity limiter sized to the CPU (``Settings.search_threads``): more threads than cores
only contend for the GIL and the cores, which lengthens every request under load.

The queue in front of the limiter is bounded (``Settings.max_queued``): a call that finds it
full is answered 503 with ``Retry-After`` at once instead of piling up, and a call running past
``Settings.request_timeout_s`` is answered 504. Its thread cannot be stopped, so it keeps its
worker slot and its place in the queue's count until it really ends: calls past their time
limit never make more than ``search_threads`` threads run at once.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import Request

from cascade.retrieval.errors import Overloaded, TimedOut
from cascade.retrieval.threads import use_in_this_thread

T = TypeVar("T")


async def run_search(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, at most ``search_threads`` at once.

    Raises:
        Overloaded: ``search_threads + max_queued`` calls are already in (503, Retry-After).
        TimedOut: the call ran past ``request_timeout_s`` (504).
    """
    state = request.app.state
    gate = getattr(state, "search_gate", None)
    if gate is None:  # created inside the running loop, once
        gate = state.search_gate = Gate(state.settings.search_threads, state.settings.max_queued,
                                        state.settings.request_timeout_s)  # fmt: skip
    return await gate.run(functools.partial(fn, *args))


class Gate:
    """The worker slots, the bounded queue before them and the time limit.

    ``busy``: calls admitted and not finished (waiting, running, or past their time limit and
    still running). A call's worker slot is held by its thread and given back when the thread
    really ends, so calls past their time limit never let more than ``threads`` run at once.
    """

    def __init__(self, threads: int, max_queued: int, timeout_s: float):
        self.slots = anyio.CapacityLimiter(threads)
        self.pool = anyio.CapacityLimiter(threads)  # the thread pool's own limit: slots gate it
        self.capacity, self.timeout_s = threads + max_queued, timeout_s
        self.busy = 0
        self._lock = threading.Lock()  # the counts are also updated from worker threads

    async def run(self, call: Callable[[], T]) -> T:
        with self._lock:
            if self.busy >= self.capacity:
                raise Overloaded(
                    f"the server is busy ({self.busy} searches and model calls in progress or waiting); retry shortly"
                )
            self.busy += 1
        loop = asyncio.get_running_loop()
        token, state = object(), {"slot": False, "started": False, "dropped": False}

        def finish() -> None:  # under self._lock
            self.busy -= 1
            if state["slot"]:
                loop.call_soon_threadsafe(self.slots.release_on_behalf_of, token)

        def work() -> T:
            with self._lock:
                if state["dropped"]:  # given up on before a thread took it
                    raise anyio.get_cancelled_exc_class()()
                state["started"] = True
            use_in_this_thread()  # numba and faiss count threads per thread: take the server's (--threads)
            try:
                return call()
            finally:
                with self._lock:
                    finish()

        try:
            with anyio.fail_after(self.timeout_s):
                await self.slots.acquire_on_behalf_of(token)
                state["slot"] = True
                return await anyio.to_thread.run_sync(work, limiter=self.pool, abandon_on_cancel=True)
        except TimeoutError:
            raise TimedOut(f"the request ran past the server's limit of {self.timeout_s:g} s") from None
        finally:
            with self._lock:
                if not state["started"] and not state["dropped"]:
                    state["dropped"] = True
                    finish()

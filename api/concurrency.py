"""Blocking work off the event loop. Searches and model calls run in worker threads under
one capacity limiter sized to the CPU (``Settings.search_threads``): more threads than cores
only contend for the GIL and the cores, which lengthens every request under load."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import Request

T = TypeVar("T")


async def run_search(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, at most ``search_threads`` at once."""
    state = request.app.state
    limiter = getattr(state, "search_limiter", None)
    if limiter is None:  # created inside the running loop, once
        limiter = state.search_limiter = anyio.CapacityLimiter(state.settings.search_threads)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

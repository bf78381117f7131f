"""Benchmarks: our code against a reference tool, in the same process, on the same data.

Each benchmark is a function ``(dataset_dir: Path, device: str | None = None, **opts) -> dict``
returning ``{"benchmark", "ours", "baseline": {"name", ...}, "ratio"}`` with ratio > 1
meaning Cascade is faster (or better, as the benchmark says). Run them while nothing else
runs: on a shared 2-core machine a ratio measured under load lies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval.registry import Registry

BENCHMARKS = Registry(
    "benchmark",
    {
        "bm25": "eval.benchmarks.bm25:run",
        "rerank": "eval.benchmarks.rerank:run_rerank",
        "listwise": "eval.benchmarks.rerank:run_listwise",
    },
)


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """The fastest of ``repeat`` timed calls (the least disturbed by other load), and its result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def run_benchmark(name: str, dataset: str | Path, device: str | None = None, **opts) -> dict:
    return BENCHMARKS.get(name)(Path(dataset), device=device, **opts)

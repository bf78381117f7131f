"""Benchmarks: our code against a reference tool, in the same process, on the same data.

Each benchmark is a function ``(dataset_dir: Path, device: str | None = None, **opts) -> dict``
returning ``{"benchmark", "ours", "baseline": {"name", ...}, "ratio"}`` with ratio > 1
meaning Cascade is faster (or better, as the benchmark says). Run them while nothing else
runs: on a shared 2-core machine a ratio measured under load lies.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.registry import Registry

BENCHMARKS = Registry(
    "benchmark",
    {
        "bm25": "cascade.eval.benchmarks.bm25:run",
        "dense-encode": "cascade.eval.benchmarks.dense:encode",
        "dense-search": "cascade.eval.benchmarks.dense:search",
        "splade-encode": "cascade.eval.benchmarks.encode:splade_encode",
        "colbert-encode": "cascade.eval.benchmarks.encode:colbert_encode",
        "plaid": "cascade.eval.benchmarks.plaid:run",
        "rede-rf-oracle": "cascade.eval.benchmarks.rede_rf:run",
        "rerank": "cascade.eval.benchmarks.rerank:run_rerank",
        "scale": "cascade.eval.benchmarks.scale:run",
        "listwise": "cascade.eval.benchmarks.rerank:run_listwise",
        "sparse": "cascade.eval.benchmarks.sparse:run",
        "soak": "cascade.eval.benchmarks.soak:run",
    },
)


def race(
    contenders: dict[str, Callable[[], Any]], rounds: int = 5, warm: bool = False
) -> dict[str, tuple[float, Any]]:
    """Time each contender ``rounds`` times, taking turns, and keep each one's fastest run.

    Taking turns spreads any background load over both sides, and the minimum is the run
    least disturbed by it; the ratio of minima is what a benchmark reports. As in ``timeit``,
    the garbage collector is paused during each timed run.

    ``warm``: call each contender once, untimed, right before its timed run. Without it a
    contender starts with the previous one's data in the CPU caches (and the collection's
    leftovers), which for millisecond-scale in-memory searches weighs on the timing, a state
    a server answering a stream of queries is never in.
    """
    best: dict[str, tuple[float, Any]] = {name: (float("inf"), None) for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            # the last run's output is freed here, not inside the next contender's timed call
            result = None
            gc.collect()  # like timeit: no collection of earlier garbage lands in a timed run
            if warm:
                fn()
            gc.disable()
            try:
                t = time.perf_counter()
                result = fn()
                elapsed = time.perf_counter() - t
            finally:
                gc.enable()
            if elapsed < best[name][0]:
                best[name] = (elapsed, result)
    return best


def synced(device) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Wrap a contender so a GPU finishes its queued work before the clock stops (a no-op
    elsewhere): ``race({"ours": synced(dev)(lambda: ...)})``."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run():
            out = fn()
            if device.type == "cuda":
                import torch

                torch.cuda.synchronize(device)
            return out

        return run

    return wrap


def best_of_sweep(timed: dict[str, tuple[float, Any]], prefix: str, batch_sizes, items: int) -> dict:
    """A reference's batch-size sweep out of a :func:`race`: contenders named ``f"{prefix}{bs}"``.

    Returns ``{"batch_size": best, "seconds", "per_s", "sweep": {bs: items/s}, "output"}``, the
    best batch size being the reference's figure (its best documented setting)."""
    sweep = {bs: items / timed[f"{prefix}{bs}"][0] for bs in batch_sizes}
    best = max(sweep, key=sweep.get)
    seconds, output = timed[f"{prefix}{best}"]
    return {"batch_size": best, "seconds": seconds, "per_s": sweep[best],
            "sweep": {str(bs): round(v, 1) for bs, v in sweep.items()}, "output": output}  # fmt: skip


def version(dist: str) -> str | None:
    """The installed version of a distribution (``importlib.metadata``), None if not installed:
    a benchmark names the versions it measured, never a version typed by hand."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(dist)
    except PackageNotFoundError:
        return None


def versions(*dists: str) -> dict[str, str | None]:
    """``{dist: version}`` of Cascade (``cascade-search``) and the given distributions."""
    return {d: version(d) for d in ("cascade-search", *dists)}


#: Benchmarks that generate their own data (``--dataset`` is not needed).
GENERATED = frozenset({"scale"})


def run_benchmark(name: str, dataset: str | Path | None, device: str | None = None, plot: str | Path | None = None,
                  **opts) -> dict:  # fmt: skip
    """Run a benchmark; ``plot``: also draw its figure to this PNG (benchmarks that draw one)."""
    fn = BENCHMARKS.get(name)
    if plot is not None:
        opts["plot"] = Path(plot)
    if dataset is None and name not in GENERATED:
        raise InvalidInput(f"benchmark {name!r} needs --dataset")
    return fn(None if dataset is None else Path(dataset), device=device, **opts)

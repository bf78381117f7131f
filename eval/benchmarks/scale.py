"""``cascade bench scale``: how build time, memory, index size and query speed grow with the
corpus, ours and the reference tool of each index family on the same axes.

``cascade bench scale --family bm25|impact|dense|plaid --sizes 100000,1000000`` runs one
family (:data:`FAMILIES`) at each size and draws log-log curves of build time, peak memory,
index bytes and queries/s against documents.

A family is a function ``run(sizes: list[int], workdir: Path, seed: int = 0, **opts) -> dict``
returning::

    {"family": "bm25",
     "rows": [{"system": "cascade", "size": 100000, "build_s": ..., "peak_gb": ...,
               "index_gb": ..., "queries_per_s": ..., "same_top10": ... or "recall@10": ...}, ...],
     "settings": {...}, "versions": {...},
     # optional: which systems the headline ratio compares, and how the reference ran
     "ours": "cascade", "reference": "lucene (pyserini)",
     "baseline": {"name": ..., "setting": ..., "version": ...}}

Row keys beyond the four curves are free (``queries_per_s_2_threads``, ``search_peak_gb``...);
a key that extends a curve's key (``queries_per_s_2_threads``) is drawn as a series of its own.
Builds are timed with :func:`measured`: in a fresh process, so the peak memory is the build's
own (and a JVM's, for Lucene through pyjnius, which lives in that process).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascade.eval.bench import versions
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.registry import Registry

log = logging.getLogger(__name__)

FAMILIES = Registry(
    "scale family",
    {
        "bm25": "cascade.eval.benchmarks.scale_bm25:run",
        "impact": "cascade.eval.benchmarks.scale_impact:run",
        "dense": "cascade.eval.benchmarks.scale_dense:run",
        "plaid": "cascade.eval.benchmarks.scale_plaid:run",
    },
)

#: The curves drawn, row key -> (axis label, file suffix).
CURVES = {
    "build_s": ("build time (s)", "build"),
    "peak_gb": ("peak memory of the build (GB)", "memory"),
    "index_gb": ("index on disk (GB)", "index"),
    "queries_per_s": ("queries/s", "qps"),
}

GB = 1e9


@dataclass(frozen=True)
class Measured:
    """What :func:`measured` returns: the function's result, its wall time in the child
    (seconds, imports inside the function included) and the child's peak resident memory."""

    result: Any
    seconds: float
    peak_bytes: int

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB


def peak_rss() -> int:
    """This process's peak resident memory in bytes: everything it holds, a JVM started
    through pyjnius included.

    Linux's ``VmHWM``, the peak of this process image: ``ru_maxrss`` would do but for one
    thing: Linux carries it over ``exec``, so a spawned child (fork, then exec) reports at least
    the RSS its parent had when it forked.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux; bytes on macOS


def _child(conn, fn: Callable, args: tuple, kwargs: dict) -> None:
    try:
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - t
        conn.send(("ok", result, seconds, peak_rss()))
    except BaseException as e:  # the parent re-raises it; a child must not die silently
        conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc(), isinstance(e, InvalidInput)))
    finally:
        conn.close()


def measured(fn: Callable, *args, **kwargs) -> Measured:
    """Run ``fn(*args, **kwargs)`` (a module-level function) in a fresh spawned process and
    return its result, wall seconds and the child's peak resident memory (bytes).

    A fresh process, so the peak is this work's own, not what the caller held before; spawned,
    not forked, so no thread pool, JVM or lock of the caller is inherited.

    Raises:
        InvalidInput: the function raised it (its message kept).
        RuntimeError: the function raised anything else, or the child died (killed for memory).
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(send, fn, args, kwargs), daemon=False)
    p.start()
    send.close()
    try:
        msg = recv.recv()
    except EOFError:
        msg = None
    p.join()
    if msg is None:
        raise RuntimeError(
            f"{fn.__module__}.{fn.__qualname__} died in its child process (exit code {p.exitcode})"
        )
    if msg[0] == "error":
        _, text, tb, invalid = msg
        if invalid:
            raise InvalidInput(text.partition(": ")[2])
        raise RuntimeError(f"{fn.__module__}.{fn.__qualname__} failed in its child process: {text}\n{tb}")
    _, result, seconds, peak = msg
    return Measured(result, seconds, int(peak))


def dir_bytes(path: str | Path) -> int:
    """Bytes of every file under ``path`` (or of the file ``path``)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_sizes(sizes: int | str | list | tuple) -> list[int]:
    """Corpus sizes from ``100000``, ``"100k,1M,8.8M"`` or a list; ascending, no repeats."""
    items = sizes if isinstance(sizes, list | tuple) else str(sizes).split(",")
    out = []
    for item in items:
        m = _SIZE.match(str(item))
        if not m:
            raise InvalidInput(f"bad corpus size {item!r}: give a count such as 100000, 100k or 8.8M")
        n = int(round(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]))
        if n < 1:
            raise InvalidInput(f"corpus size must be >= 1, got {item!r}")
        out.append(n)
    if not out:
        raise InvalidInput("give at least one corpus size")
    return sorted(set(out))


def default_workdir() -> Path:
    """Where generated corpora and built indexes are kept between runs."""
    from cascade.eval.datasets import cache_dir

    return cache_dir() / "scale"


def run(dataset_dir: Path | None = None, device: str | None = None, family: str = "bm25",
        sizes: int | str | list = "100000", workdir: str | Path | None = None, plot: Path | None = None,
        seed: int = 0, **opts) -> dict:  # fmt: skip
    """Run one family's cost curves (``dataset_dir`` is not used: corpora are generated).

    Args:
        family: a name in :data:`FAMILIES`.
        sizes: corpus sizes (documents), see :func:`parse_sizes`.
        workdir: where corpora, indexes and results go (default :func:`default_workdir`).
        plot: ``FILE.png``: the curves go to ``FILE-build.png``, ``FILE-memory.png``...
            (default: ``WORKDIR/results/FAMILY-*.png``).
        seed: the synthetic data's seed.
        opts: passed to the family.

    Returns the bench JSON: ``benchmark``, ``ours``, ``baseline``, ``ratio`` (ours against the
    reference in queries/s at the largest size), ``rows``, ``plots``.
    """
    fn = FAMILIES.get(family)
    sizes = parse_sizes(sizes)
    workdir = Path(workdir) if workdir is not None else default_workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    if device is not None:
        opts["device"] = device
    res = fn(sizes, workdir, seed=int(seed), **opts)
    rows = res["rows"]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    if not systems:
        raise InvalidInput(f"scale family {family!r} returned no rows")
    ours_name = res.get("ours", systems[0])
    ref_name = res.get("reference", next((s for s in systems if s != ours_name), None))
    top = max(sizes)

    def at_top(system):
        return next((r for r in rows if r["system"] == system and r["size"] == top), None)

    ours_row, ref_row = at_top(ours_name), at_top(ref_name) if ref_name else None
    ratio = None
    if ours_row and ref_row and ours_row.get("queries_per_s") and ref_row.get("queries_per_s"):
        ratio = round(ours_row["queries_per_s"] / ref_row["queries_per_s"], 3)
    baseline = dict(res.get("baseline") or {"name": ref_name, "setting": json.dumps(res.get("settings", {})),
                                            "version": None})  # fmt: skip
    if ref_row:
        baseline.update({k: v for k, v in ref_row.items() if k not in ("system", "size")})
    out = {
        "benchmark": "scale",
        "family": family,
        "sizes": sizes,
        "seed": int(seed),
        "workdir": str(workdir),
        "ours": {
            "name": ours_name,
            **({k: v for k, v in ours_row.items() if k not in ("system", "size")} if ours_row else {}),
        },  # fmt: skip
        "baseline": baseline,
        "ratio": ratio,
        "ratio_note": f"queries/s of {ours_name} over {ref_name} at {top:,} documents",
        "rows": rows,
        "settings": res.get("settings", {}),
        "versions": {**versions("numpy"), **res.get("versions", {})},
    }
    if plot is None:
        plot = workdir / "results" / f"{family}.png"
    out["plots"] = [str(p) for p in draw(rows, Path(plot), f"{family}, seed {seed}")]
    results = Path(plot).with_suffix(".json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=2))
    out["results_json"] = str(results)
    return out


def series(rows: list[dict], key: str) -> dict[str, list[tuple[float, float]]]:
    """Points (size, value) per system for curve ``key``; a row key that extends it
    (``queries_per_s_2_threads``) makes a series ``"SYSTEM, 2 threads"`` of its own."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if (
                not (k == key or k.startswith(key + "_"))
                or not isinstance(v, int | float)
                or isinstance(v, bool)
            ):
                continue
            if v is None or v <= 0:
                continue  # a log axis draws no zero
            name = r["system"] if k == key else f"{r['system']}, {k[len(key) + 1 :].replace('_', ' ')}"
            out.setdefault(name, []).append((float(r["size"]), float(v)))
    return {n: sorted(p) for n, p in out.items()}


def draw(rows: list[dict], plot: Path, title: str) -> list[Path]:
    """One log-log PNG per curve beside ``plot`` (``STEM-build.png``...), one line per system."""
    from cascade.eval.plots import line_chart

    paths = []
    for key, (label, suffix) in CURVES.items():
        s = series(rows, key)
        if not s:
            continue
        path = plot.with_name(f"{plot.stem}-{suffix}{plot.suffix or '.png'}")
        paths.append(line_chart(path, s, "documents", label, f"{title}: {label}", logx=True, logy=True))
    return paths

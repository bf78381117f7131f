"""Figures of the benchmarks (``cascade bench NAME --plot FILE.png``): one line chart helper.

Every bench figure is a few named series of (x, y) points: recall against queries/s for
approximate settings, throughput against batch size, cost against corpus size. matplotlib
draws them through its object API on the Agg canvas (no pyplot, no display), so it runs
headless and leaves no global figure state behind.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from cascade.retrieval.errors import require
from cascade.retrieval.storage import atomic_file

Series = Mapping[str, Sequence[tuple[float, float]]]


def line_chart(path: str | Path, series: Series, xlabel: str, ylabel: str, title: str = "",
               logx: bool = False, logy: bool = False, notes: Sequence[str] = (),
               pareto: bool = False) -> Path:  # fmt: skip
    """Draw ``series`` (name -> points, drawn in the given order) to a PNG at ``path``.

    A series of one point is drawn as a marker only (a reference setting); longer ones as
    lines with markers. ``notes``: lines of small text under the title (what was timed, how).
    ``pareto``: settings of a trade-off (x: recall, y: speed): every point as a marker, and a
    line through the series' frontier only (no other setting both higher and faster).
    """
    require("matplotlib", "bench")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, points in series.items():
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        if pareto and len(points) > 1:
            (line,) = ax.plot(xs, ys, marker="o", linestyle="none", alpha=0.45)
            front = _frontier(points)
            ax.plot(*zip(*front, strict=True), marker="o", color=line.get_color(), label=name)
            continue
        ax.plot(xs, ys, marker="o", linestyle="-" if len(xs) > 1 else "none", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    lines = [line for note in notes for line in textwrap.wrap(note, 95)]
    ax.set_title("\n".join([title, *lines]), fontsize="medium" if not lines else "small")
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def stacked_line_charts(
    path: str | Path, panels: Sequence[tuple[Series, str]], xlabel: str, title: str = ""
) -> Path:
    """Draw panels that share one x axis (e.g. latency and memory over time), one above the
    other, to a PNG at ``path``; each panel is ``(series, ylabel)``."""
    require("matplotlib", "bench")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.5 + 2.2 * len(panels)), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (series, ylabel) in zip(axes, panels, strict=True):
        for name, points in series.items():
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker=".", label=name)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1].set_xlabel(xlabel)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def _frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both x and y, by x ascending."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front[::-1]

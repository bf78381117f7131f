"""Static HTML reports with PNG figures: one writer for every report Cascade draws.

A report is a title and a list of :class:`Section`; a section holds blocks: :class:`Text`,
:class:`Table`, :class:`Figure` (drawn here with matplotlib's object API on the Agg canvas,
headless, no global pyplot state) and :class:`Image` (a PNG drawn elsewhere, such as
:func:`cascade.eval.plots.line_chart`'s, copied in). :func:`write_report` writes
``DIR/index.html`` and the PNGs beside it, as one directory that replaces the previous report
whole (:func:`cascade.retrieval.storage.atomic_dir`). The page needs nothing from the network.

Example:
    >>> write_report("out/report", "BM25 on SciFact", [
    ...     Section("Metrics", [Table(["metric", "value"], [["ndcg@10", 0.665]])]),
    ...     Section("Curve", [Figure("curve", lambda fig: fig.add_subplot().plot([1, 2], [3, 4]))]),
    ... ])  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.storage import atomic_dir

#: written into every report's <head>: a directory holding it may be replaced by a new report
GENERATOR = "cascade-report"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


@dataclass(frozen=True)
class Text:
    """A paragraph (plain text; escaped)."""

    text: str


@dataclass(frozen=True)
class Table:
    """Rows of cells; floats are shown with ``digits`` decimals. ``highlight``: a function of
    (row index, column index, value) giving a CSS class ("win", "loss") or None."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""
    digits: int = 4
    highlight: Callable[[int, int, Any], str | None] | None = None


@dataclass(frozen=True)
class Figure:
    """A figure drawn at write time into ``NAME.png``: ``draw(fig)`` fills a matplotlib Figure."""

    name: str
    draw: Callable[[Any], None]
    caption: str = ""
    size: tuple[float, float] = (7.0, 4.0)


@dataclass(frozen=True)
class Image:
    """An existing PNG (drawn by another tool), copied into the report as ``NAME.png``."""

    name: str
    path: Path
    caption: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    blocks: Sequence[Text | Table | Figure | Image] = field(default_factory=list)


def write_report(out_dir: str | Path, title: str, sections: Sequence[Section], subtitle: str = "") -> Path:
    """Write the report to ``out_dir`` (``index.html`` + one PNG per figure); returns the page.

    Raises:
        InvalidInput: ``out_dir`` is a file, or a non-empty directory that is not a report
            (a report replaces its directory whole, so it never writes over other files);
            two figures of one name, or a name unfit for a file.
        MissingDependency: matplotlib is not installed and a figure must be drawn.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir)
    names = [b.name for s in sections for b in s.blocks if isinstance(b, Figure | Image)]
    for name in names:
        if not _NAME.match(name):
            raise InvalidInput(f"report figure name {name!r}: use letters, digits, '.', '_' and '-'")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidInput(f"report figure names used twice: {', '.join(dup)}")
    with atomic_dir(out_dir) as tmp:
        body = []
        for s in sections:
            body.append(f"<section><h2>{_e(s.title)}</h2>")
            body.extend(_block(b, tmp) for b in s.blocks)
            body.append("</section>")
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        page = _PAGE.format(
            title=_e(title), subtitle=f"<p class=sub>{_e(subtitle)}</p>" if subtitle else "",
            generator=GENERATOR, stamp=stamp, body="\n".join(body), css=_CSS,
        )  # fmt: skip
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return out_dir / "index.html"


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"report directory {out_dir} is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        page = out_dir / "index.html"
        if not (
            page.is_file() and f'content="{GENERATOR}"' in page.read_text(encoding="utf-8", errors="replace")
        ):
            raise InvalidInput(
                f"report directory {out_dir} holds other files: give an empty or new directory"
            )


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cell(v: Any, digits: int) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "" if v is None else str(v)


def _block(b: Text | Table | Figure | Image, tmp: Path) -> str:
    if isinstance(b, Text):
        return f"<p>{_e(b.text)}</p>"
    if isinstance(b, Table):
        head = "".join(f"<th>{_e(c)}</th>" for c in b.columns)
        rows = []
        for i, row in enumerate(b.rows):
            cells = []
            for j, v in enumerate(row):
                cls = b.highlight(i, j, v) if b.highlight else None
                num = isinstance(v, int | float) and not isinstance(v, bool)
                attrs = " ".join(x for x in (f'class="{cls}"' if cls else "", "data-num" if num else "") if x)
                cells.append(
                    f"<td {attrs}>{_e(_cell(v, b.digits))}</td>"
                    if attrs
                    else f"<td>{_e(_cell(v, b.digits))}</td>"
                )
            rows.append(f"<tr>{''.join(cells)}</tr>")
        cap = f"<caption>{_e(b.caption)}</caption>" if b.caption else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    png = tmp / f"{b.name}.png"
    if isinstance(b, Image):
        if not Path(b.path).is_file():
            raise InvalidInput(f"report image {b.path} does not exist")
        shutil.copyfile(b.path, png)
    else:
        _draw(b, png)
    cap = f"<figcaption>{_e(b.caption)}</figcaption>" if b.caption else ""
    return f'<figure><img src="{_e(png.name)}" alt="{_e(b.caption or b.name)}">{cap}</figure>'


def _draw(fig_block: Figure, png: Path) -> None:
    require("matplotlib", "bench")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=fig_block.size, dpi=110)
    FigureCanvasAgg(fig)
    fig_block.draw(fig)
    fig.tight_layout()
    fig.savefig(png, format="png")


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1c1f24;margin:0 auto;padding:1rem;max-width:1100px}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;border-bottom:1px solid #d8dce2;padding-bottom:.2rem;margin-top:1.6rem}
.sub,footer{color:#5f6670}table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem;display:block;overflow-x:auto}
caption{text-align:left;color:#5f6670;padding:.2rem 0}th,td{border:1px solid #d8dce2;padding:.25rem .55rem;text-align:left;vertical-align:top;white-space:pre-line}
th{background:#f0f2f5}td[data-num]{text-align:right;font-variant-numeric:tabular-nums}
td.win{background:#e3f4e8}td.loss{background:#fbe5e3}figure{margin:.8rem 0}img{max-width:100%;height:auto;border:1px solid #eceff3}
figcaption{color:#5f6670;font-size:.85rem}
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="{generator}">
<title>{title}</title><link rel="icon" href="data:,"><style>{css}</style></head>
<body><h1>{title}</h1>{subtitle}
{body}
<footer><p>Written by Cascade, {stamp}.</p></footer>
</body></html>
"""


def flat_rows(result: Mapping[str, Any], prefix: str = "") -> list[list[Any]]:
    """A nested JSON result as ``[dotted.key, value]`` rows (lists as compact JSON)."""
    rows: list[list[Any]] = []
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(flat_rows(value, f"{name}."))
        elif isinstance(value, list | tuple):
            rows.append([name, json.dumps(value, default=str)])
        else:
            rows.append([name, value])
    return rows


def result_report(
    out_dir: str | Path, title: str, result: Mapping[str, Any], images: Sequence[str | Path] = ()
) -> Path:
    """A benchmark's (or any command's) JSON result as a table, with its figures: what
    ``cascade bench NAME --plot FILE.png --report DIR`` writes."""
    figures = [Image(Path(p).stem, Path(p), caption=Path(p).name) for p in images]
    sections = [Section("Result", [Table(["field", "value"], flat_rows(result))])]
    if figures:
        sections.insert(0, Section("Figures", figures))
    return write_report(out_dir, title, sections)

"""The evaluation report of ``cascade eval --report DIR`` (with ``--compare RUN``: against a
baseline run): metrics and significance, per-query deltas as a sorted waterfall, wins, ties
and losses, and the queries that changed most with their top documents. Written through
:func:`cascade.eval.report.write_report`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascade.retrieval.types import Qrels, Run

from .datasets import Dataset
from .evaluate import dataset_index_set
from .report import Figure, Section, Table, Text, write_report

#: per-query differences at most this far from 0 are ties
TIE = 1e-9
WIN, LOSS, TIE_COLOR = "#2e8b57", "#c0392b", "#9aa1aa"


@dataclass(frozen=True)
class Scored:
    """One system as scored on the dataset: its name, mean and per-query metric values, run."""

    name: str
    metrics: Mapping[str, float]
    per_query: Mapping[str, Mapping[str, float]]
    run: Run


def deltas(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """``a - b`` per query, over the queries both score."""
    return {q: a[q] - b[q] for q in sorted(a.keys() & b.keys())}


def wins_ties_losses(d: Mapping[str, float]) -> tuple[int, int, int]:
    wins = sum(v > TIE for v in d.values())
    losses = sum(v < -TIE for v in d.values())
    return wins, len(d) - wins - losses, losses


def evaluation_report(
    out_dir: str | Path,
    summary: Mapping[str, Any],
    system: Scored,
    queries: Mapping[str, str],
    qrels: Qrels,
    baseline: Scored | None = None,
    titles: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
    top_queries: int = 10,
    top_docs: int = 3,
) -> Path:
    """Write the report; returns its ``index.html``.

    Args:
        summary: what ``cascade eval --json`` prints (dataset, split, pipeline, num_queries,
            timings_s and, with a baseline, significance per metric).
        queries: query id -> text; qrels: the judgments (marks relevant top documents).
        titles: doc ids -> titles, for the top documents shown (default: ids only).
    """
    metrics = list(system.metrics)
    first = metrics[0]
    who = f"{summary['pipeline']}" + (f" against {baseline.name}" if baseline else "")
    head = Text(f"{summary['dataset']} [{summary['split']}], {summary['num_queries']} queries: {who}.")
    sections = [Section("Metrics", [head, _metrics_table(system, baseline, summary.get("significance", {}))])]
    timings = summary.get("timings_s") or {}
    if timings:
        rows = [[k, float(v)] for k, v in timings.items() if k != "queries_per_s"]
        timed: list[Any] = [Table(["step", "seconds"], rows, digits=3)]
        if "queries_per_s" in timings:
            timed.append(Text(f"{timings['queries_per_s']:.1f} queries per second (search time only)."))
        sections.append(Section("Timings", timed))
    if baseline is None:
        sections.append(Section("Per-query values", [_histograms(system, metrics)]))
        worst = sorted(system.per_query[first], key=lambda q: (system.per_query[first][q], q))[:top_queries]
        rows = [[q, queries.get(q, ""), system.per_query[first][q], _top(system.run, q, qrels, top_docs)]
                for q in worst]  # fmt: skip
        sections.append(Section(f"Hardest queries by {first}", [
            Table(["query id", "query", first, f"top {top_docs} (★ = relevant, grade)"], rows)
        ]))  # fmt: skip
    else:
        per_metric = {m: deltas(system.per_query[m], baseline.per_query[m]) for m in metrics}
        blocks: list[Any] = [
            Text(
                f"Each bar is one query: {system.name} minus {baseline.name}, sorted; green above 0 is a win."
            ),
            _wtl_table(per_metric),
        ]
        blocks += [_waterfall(m, d, system.name, baseline.name) for m, d in per_metric.items()]
        sections.append(Section("Per-query differences", blocks))
        d = per_metric[first]
        changed = sorted(d, key=lambda q: (-abs(d[q]), q))[:top_queries]
        rows = [
            [q, queries.get(q, ""), baseline.per_query[first][q], system.per_query[first][q], d[q],
             _top(system.run, q, qrels, top_docs), _top(baseline.run, q, qrels, top_docs)]
            for q in changed if abs(d[q]) > TIE
        ]  # fmt: skip
        cols = ["query id", "query", f"{first} {baseline.name}", f"{first} {system.name}", "Δ",
                f"top {top_docs} {system.name}", f"top {top_docs} {baseline.name}"]  # fmt: skip
        sections.append(Section(f"Queries that changed most ({first})", [
            Table(cols, rows, caption="★ marks a relevant document (its grade)", highlight=_sign_class(4))
            if rows else Text("No query changed.")
        ]))  # fmt: skip
    sections = _with_titles(sections, titles)
    return write_report(
        out_dir, f"Evaluation: {who}", sections, subtitle=f"{summary['dataset']} [{summary['split']}]"
    )


def _metrics_table(system: Scored, baseline: Scored | None, sig: Mapping[str, Mapping[str, Any]]) -> Table:
    if baseline is None:
        return Table(["metric", system.name], [[m, v] for m, v in system.metrics.items()])
    rows = []
    for m, v in system.metrics.items():
        s = sig.get(m, {})
        rows.append(
            [m, baseline.metrics[m], v, v - baseline.metrics[m], s.get("t_test_p"), s.get("randomization_p")]
        )
    cols = ["metric", baseline.name, system.name, "Δ", "paired t-test p", "randomization p"]
    return Table(
        cols, rows, caption="two-sided p-values over the queries both runs score", highlight=_sign_class(3)
    )


def _sign_class(col: int) -> Callable[[int, int, Any], str | None]:
    def cls(_row: int, j: int, v: Any) -> str | None:
        if j != col or not isinstance(v, float) or abs(v) <= TIE:
            return None
        return "win" if v > 0 else "loss"

    return cls


def _wtl_table(per_metric: Mapping[str, Mapping[str, float]]) -> Table:
    rows = []
    for m, d in per_metric.items():
        w, t, lo = wins_ties_losses(d)
        vals = list(d.values()) or [0.0]
        rows.append([m, w, t, lo, sum(vals) / len(vals), max(vals), min(vals)])
    return Table(["metric", "wins", "ties", "losses", "mean Δ", "largest gain", "largest loss"], rows,
                 caption=f"per query; |Δ| ≤ {TIE:g} is a tie")  # fmt: skip


def _slug(metric: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in metric)


def _waterfall(metric: str, d: Mapping[str, float], name: str, base: str) -> Figure:
    ordered = sorted(d.values(), reverse=True)
    w, t, lo = wins_ties_losses(d)

    def draw(fig: Any) -> None:
        from matplotlib.ticker import MaxNLocator

        ax = fig.add_subplot()
        colors = [WIN if v > TIE else LOSS if v < -TIE else TIE_COLOR for v in ordered]
        ax.bar(range(len(ordered)), ordered, width=1.0, color=colors, linewidth=0)
        ax.axhline(0, color="#333", linewidth=0.8)
        ax.set_xlim(-0.5, len(ordered) - 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"queries, sorted by Δ ({w} wins, {t} ties, {lo} losses)")
        ax.set_ylabel(f"Δ {metric}")
        ax.set_title(f"{metric}: {name} − {base}, per query", fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)

    return Figure(
        f"waterfall-{_slug(metric)}",
        draw,
        caption=f"{metric}: per-query Δ, sorted ({w} wins, {t} ties, {lo} losses)",
    )


def _histograms(system: Scored, metrics: Sequence[str]) -> Figure:
    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, m in zip(axes, metrics, strict=True):
            vals = list(system.per_query[m].values())
            ax.hist(vals, bins=20, range=(0, 1), color="#2f5fb3")
            ax.set_title(m, fontsize="medium")
            ax.set_xlabel("value")
        axes[0].set_ylabel("queries")

    return Figure(
        "per-query", draw, caption="distribution of per-query values", size=(3.2 * len(metrics) + 1, 3.4)
    )


def _top(run: Run, qid: str, qrels: Qrels, n: int) -> list[tuple[str, int]]:
    """The top ``n`` doc ids of ``qid`` with their relevance grades (titles are added later)."""
    r = run.get(qid)
    judged = qrels.get(qid, {})
    return [(d, judged.get(d, 0)) for d in (r.doc_ids[:n] if r is not None else ())]


def _with_titles(
    sections: list[Section], titles: Callable[[Sequence[str]], Mapping[str, str]] | None
) -> list[Section]:
    """Render the top-document cells, looking every shown doc id up at once."""
    ids = sorted({d for s in sections for b in s.blocks if isinstance(b, Table)
                  for row in b.rows for c in row if isinstance(c, list) for d, _ in c})  # fmt: skip
    found = titles(ids) if ids and titles is not None else {}
    return _render_tops(sections, found)


def _render_tops(sections: list[Section], found: Mapping[str, str]) -> list[Section]:
    out = []
    for s in sections:
        blocks = []
        for b in s.blocks:
            if isinstance(b, Table):
                rows = [[_doc_cell(c, found) if isinstance(c, list) else c for c in row] for row in b.rows]
                b = Table(b.columns, rows, b.caption, b.digits, b.highlight)
            blocks.append(b)
        out.append(Section(s.title, blocks))
    return out


def _doc_cell(docs: list[tuple[str, int]], found: Mapping[str, str]) -> str:
    lines = []
    for d, grade in docs:
        title = found.get(d, "")
        mark = f" ★{grade}" if grade > 0 else ""
        lines.append(f"{d}{mark}" + (f" {title[:60]}" if title else ""))
    return "\n".join(lines)


def write_eval_report(
    out_dir: str | Path, dataset: Dataset, summary: Mapping[str, Any], system: Scored, baseline: Scored | None
) -> Path:
    """:func:`evaluation_report` over a dataset: its queries, judgments and document titles."""
    return evaluation_report(
        out_dir, summary, system, {q.id: q.text for q in dataset.queries}, dataset.qrels, baseline,
        titles=lambda ids: corpus_titles(dataset, ids),
    )  # fmt: skip


def corpus_titles(dataset: Dataset, ids: Sequence[str]) -> dict[str, str]:
    """Titles (else the text's start) of a few documents: from the dataset's cached docstore
    when an evaluation built one, else one streaming pass over the corpus."""
    wanted = set(ids)
    store = dataset_index_set(dataset).root / "docstore.sqlite"
    if store.is_file():
        docs = dataset_index_set(dataset).docstore().get_many(sorted(wanted), missing_ok=True)
    else:
        docs = [d for d in dataset.corpus() if d.id in wanted]
    return {d.id: d.title or d.text[:60] for d in docs}

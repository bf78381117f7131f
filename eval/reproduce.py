"""The reproduction matrix: conditions x datasets, each with the figure it must reach.

``matrix.yaml`` beside this module is the data: named conditions (a pipeline preset or an
inline spec) and expected rows (condition, dataset, metric, expected value, tolerance, and
where the value comes from: a published figure, or our own measurement marked as such).
``cascade reproduce`` runs the rows and prints condition, dataset, metric, expected, got,
delta and pass; the README's quality table is rendered from the same file
(:func:`markdown_table`), so no figure there is typed by hand.

Paths in the file may start with ``{shared}``: the folder holding ``datasets/`` and
``models/`` (``--shared``, else ``$CASCADE_SHARED``, else ``../shared`` beside the project).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascade.retrieval.errors import InvalidInput, NotFound

from .metrics import parse_metrics

log = logging.getLogger(__name__)

MATRIX_FILE = Path(__file__).with_name("matrix.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    pipeline: str | dict[str, Any] = Field(description="a preset name or an inline pipeline spec")
    ci: bool = Field(False, description="fast enough for every CI run (`--ci`)")
    note: str = ""


class Expected(_Strict):
    condition: str
    dataset: str
    metric: str
    expected: float
    tolerance: float = Field(ge=0)
    source: Literal["published", "measured", "reference"]
    ref: str = Field(description="who published or measured the figure, and how")


class Matrix(_Strict):
    datasets: dict[str, str] = Field(description="dataset name -> directory or BEIR name")
    conditions: dict[str, Condition]
    expected: list[Expected]

    @model_validator(mode="after")
    def _known_names(self) -> Matrix:
        for row in self.expected:
            if row.condition not in self.conditions:
                raise ValueError(f"row names unknown condition {row.condition!r}")
            if row.dataset not in self.datasets:
                raise ValueError(f"row names unknown dataset {row.dataset!r}")
            parse_metrics([row.metric])
        return self


def load_matrix(path: str | Path = MATRIX_FILE) -> Matrix:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"matrix file {path} does not exist")
    try:
        return Matrix.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as e:
        raise InvalidInput(f"matrix file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'matrix'}: {err['msg']}"
                             for err in e.errors())  # fmt: skip
        raise InvalidInput(f"matrix file {path} is not valid: {problems}") from None


def shared_dir(value: str | Path | None = None) -> Path:
    """The folder ``{shared}`` stands for (it need not exist until a row uses it)."""
    if value is not None:
        return Path(value).expanduser().resolve()
    if os.environ.get("CASCADE_SHARED"):
        return Path(os.environ["CASCADE_SHARED"]).expanduser().resolve()
    return (Path(__file__).resolve().parents[1].parent / "shared").resolve()


def _expand(value: Any, shared: Path) -> Any:
    """``{shared}`` substituted in every string of a (nested) value."""
    if isinstance(value, str):
        return value.replace("{shared}", str(shared))
    if isinstance(value, dict):
        return {k: _expand(v, shared) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, shared) for v in value]
    return value


def select(matrix: Matrix, only: Sequence[str] = (), ci: bool = False) -> list[Expected]:
    """The rows to run: those of the ``only`` conditions (all when empty), CI's when ``ci``."""
    unknown = [n for n in only if n not in matrix.conditions]
    if unknown:
        raise NotFound(f"unknown condition(s) {', '.join(unknown)}; valid: {', '.join(matrix.conditions)}")
    return [r for r in matrix.expected
            if (not only or r.condition in only) and (not ci or matrix.conditions[r.condition].ci)]  # fmt: skip


def run_rows(matrix: Matrix, rows: Sequence[Expected], shared: Path) -> list[dict[str, Any]]:
    """Evaluate each (condition, dataset) once and compare every metric row of it."""
    from .datasets import load_dataset
    from .evaluate import evaluate_pipeline
    from .presets import resolve_pipeline

    groups: dict[tuple[str, str], list[Expected]] = {}
    for row in rows:
        groups.setdefault((row.condition, row.dataset), []).append(row)
    out = []
    for (cond, ds_name), group in groups.items():
        condition = matrix.conditions[cond]
        spec = resolve_pipeline(_expand(condition.pipeline, shared))
        spec = spec.model_copy(update={"name": cond})
        dataset = load_dataset(_expand(matrix.datasets[ds_name], shared), "test")
        log.info("reproduce: %s on %s", cond, ds_name)
        report, _ = evaluate_pipeline(dataset, spec, sorted({r.metric for r in group}))
        for row in group:
            got = report.metrics[row.metric]
            delta = got - row.expected
            out.append({
                "condition": cond, "dataset": ds_name, "metric": row.metric,
                "expected": row.expected, "tolerance": row.tolerance, "got": round(got, 6),
                "delta": round(delta, 6), "pass": abs(delta) <= row.tolerance + 1e-12,
                "source": row.source, "search_s": round(report.timings_s.get("search", 0.0), 4),
            })  # fmt: skip
    return out


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    head = f"{'condition':<16} {'dataset':<10} {'metric':<11} {'expected':>9} {'got':>9} {'delta':>9}  pass"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['condition']:<16} {r['dataset']:<10} {r['metric']:<11} {r['expected']:>9.4f} "
                     f"{r['got']:>9.4f} {r['delta']:>+9.4f}  {'yes' if r['pass'] else 'NO'}")  # fmt: skip
    return "\n".join(lines)


@cache
def _matrix_default() -> Matrix:
    return load_matrix()


def markdown_table(matrix: Matrix | None = None) -> str:
    """The README's quality table: every expected row, with its tolerance and source."""
    matrix = matrix or _matrix_default()
    lines = ["| condition | dataset | metric | expected | tolerance | source |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in matrix.expected:
        note = f"{r.source}: {r.ref}"
        lines.append(
            f"| {r.condition} | {r.dataset} | {r.metric} | {r.expected:.4f} | {r.tolerance:g} | {note} |"
        )
    return "\n".join(lines)


def write_matrix_report(out_dir: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """The run as an HTML report: the table (misses marked) and each row's delta against its
    tolerance, so a reader sees at a glance how close every figure came."""
    from .report import Figure, Section, Table, Text, write_report

    columns = ["condition", "dataset", "metric", "expected", "got", "delta", "tolerance", "pass", "source"]
    table = Table(columns, [[r[c] for c in columns] for r in rows], digits=4,
                  highlight=lambda i, j, v: None if columns[j] != "pass" else ("win" if v else "loss"))  # fmt: skip

    def draw(fig) -> None:
        ax = fig.add_subplot()
        labels = [f"{r['condition']} {r['dataset']} {r['metric']}" for r in rows]
        # delta in units of its tolerance: inside [-1, 1] passes (a zero tolerance counts as 1e-4)
        units = [r["delta"] / max(r["tolerance"], 1e-4) for r in rows]
        ax.barh(labels, units, color=["tab:green" if r["pass"] else "tab:red" for r in rows])
        ax.axvline(-1, color="grey", linestyle="--")
        ax.axvline(1, color="grey", linestyle="--")
        ax.set_xlabel("(got - expected) / tolerance")
        ax.invert_yaxis()

    passed = sum(r["pass"] for r in rows)
    return write_report(out_dir, "Reproduction matrix", [
        Section("Rows", [Text(f"{passed} of {len(rows)} rows reach their figure."), table]),
        Section("Delta against tolerance", [Figure("deltas", draw, size=(8, 0.5 * len(rows) + 1.5))]),
    ])  # fmt: skip

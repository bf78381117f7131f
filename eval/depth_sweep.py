"""Rerank-depth sweeps: a pipeline's last reranker at several depths over one first-stage run.

The first stage (retrievers, fusion and every rerank stage before the last) runs once; the
last reranker then reads the top ``d`` of those same lists for each depth ``d``, so the
depths differ only in how deep the reranker reads. Each depth's run is exactly what the
pipeline with that stage depth returns (``Pipeline.rerank_stage`` is the one code path), and
each is tested against the first stage alone with the paired tests of :mod:`.significance`.
``cascade eval --rerank-depths 10,20,50,100`` prints the table, ``--plot`` draws it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cascade.rerank.registry import build_rerankers
from cascade.retrieval.base import Reranker
from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.pipeline import PipelineSpec, RerankStage
from cascade.retrieval.storage import atomic_file

from .datasets import Dataset
from .evaluate import dataset_index_set, score_run
from .significance import paired_t_test, randomization_test

log = logging.getLogger(__name__)

#: the largest depth a rerank stage accepts (its field's limit)
MAX_DEPTH = next(m.le for m in RerankStage.model_fields["depth"].metadata if getattr(m, "le", None))


def parse_depths(text: str | Sequence[int]) -> list[int]:
    """``"10,20,50"`` -> ``[10, 20, 50]``: distinct integers in 1..10,000, returned ascending.

    Raises:
        InvalidInput: an empty list, a value that is not an integer, out of range, or repeated.
    """
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    if not parts or any(p == "" for p in parts):
        raise InvalidInput(f"--rerank-depths wants comma-separated integers, e.g. 10,20,50; got {text!r}")
    depths = []
    for p in parts:
        try:
            d = int(p)
        except (TypeError, ValueError):
            raise InvalidInput(f"rerank depth {p!r} is not an integer") from None
        if not 1 <= d <= MAX_DEPTH:
            raise InvalidInput(f"rerank depth {d} is out of range (1 to {MAX_DEPTH})")
        depths.append(d)
    if len(set(depths)) != len(depths):
        raise InvalidInput(f"rerank depths repeat a value: {text!r}")
    return sorted(depths)


@dataclass
class DepthResult:
    depth: int
    metrics: dict[str, float]
    rerank_s: float
    candidates_per_query: float  # documents the reranker read, on average (the first stage may hold fewer)
    significance: dict[str, dict[str, float]]

    def to_json(self, num_queries: int) -> dict:
        return {
            "depth": self.depth,
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
            "rerank_s": round(self.rerank_s, 4),
            "rerank_ms_per_query": round(1000 * self.rerank_s / max(num_queries, 1), 3),
            "candidates_per_query": round(self.candidates_per_query, 2),
            "significance": self.significance,
        }


@dataclass
class SweepReport:
    dataset: str
    split: str
    pipeline: str
    reranker: str
    num_queries: int
    first_stage: dict[str, float]
    depths: list[DepthResult]
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "pipeline": self.pipeline,
            "reranker": self.reranker,
            "num_queries": self.num_queries,
            "first_stage": {"metrics": {k: round(v, 6) for k, v in self.first_stage.items()}},
            "depths": [d.to_json(self.num_queries) for d in self.depths],
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


def sweep_rerank_depths(
    dataset: Dataset,
    spec: PipelineSpec,
    depths: Sequence[int],
    metrics: list[str],
    rerankers: Sequence[Reranker] | None = None,
    warm: bool = False,
) -> SweepReport:
    """Run ``spec``'s first stage once and its last reranker at each of ``depths``.

    Args:
        dataset: the split to score.
        spec: a pipeline with at least one rerank stage; the last one is swept.
        depths: rerank depths (see :func:`parse_depths`).
        metrics: metric names.
        rerankers: the spec's rerankers, already built (default: built from the spec).
        warm: run the last reranker once at the deepest depth, untimed, before the timed runs:
            a reranker that caches document encodings (``colbert`` with ``doc_cache``) then
            shows its steady cost at each depth; one that caches nothing does the work twice.

    Raises:
        InvalidInput: the pipeline has no reranker, or a bad depth.
    """
    if not spec.rerankers:
        raise InvalidInput(
            f"pipeline {spec.name!r} has no reranker stage: a depth sweep reruns the last reranker "
            "(use a preset such as bm25+ce or bm25+colbert, or add a rerankers entry)"
        )
    depths = parse_depths(list(depths))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    pipeline = dataset_index_set(dataset).pipeline(
        spec, build_rerankers(spec) if rerankers is None else rerankers
    )
    timings["index_load_or_build"] = time.perf_counter() - t
    queries = dataset.queries
    rankings, first = pipeline.first_stage(queries)
    timings.update(first)
    *earlier, last = list(zip(spec.rerankers, pipeline.rerankers, strict=True))
    for stage, reranker in earlier:
        t = time.perf_counter()
        rankings = pipeline.rerank_stage(stage, reranker, queries, rankings)
        timings[f"rerank:{stage.reranker}"] = time.perf_counter() - t
    base_run = {r.query_id: r.top(spec.k) for r in rankings}
    base_agg, base_pq = score_run(dataset, base_run, metrics, with_per_query=True)
    if warm:
        t = time.perf_counter()
        pipeline.rerank_stage(last[0].model_copy(update={"depth": depths[-1]}), last[1], queries, rankings)
        timings["warmup"] = time.perf_counter() - t
    results = []
    for depth in depths:
        stage = last[0].model_copy(update={"depth": depth})
        log.info("rerank depth %d: %s over %d queries", depth, stage.reranker, len(queries))
        t = time.perf_counter()
        reranked = pipeline.rerank_stage(stage, last[1], queries, rankings)
        elapsed = time.perf_counter() - t
        run = {r.query_id: r.top(spec.k) for r in reranked}
        agg, pq = score_run(dataset, run, metrics, with_per_query=True)
        significance = {
            m: {
                "t_test_p": paired_t_test(pq[m], base_pq[m]),
                "randomization_p": randomization_test(pq[m], base_pq[m]),
            }
            for m in metrics
        }
        read = sum(min(depth, len(r)) for r in rankings) / max(len(rankings), 1)
        results.append(DepthResult(depth, agg, elapsed, read, significance))
    return SweepReport(dataset.name, dataset.split, spec.name, last[0].reranker, len(queries), base_agg,
                       results, timings)  # fmt: skip


def plot_sweep(report: SweepReport, path: str | Path) -> Path:
    """Two panels, written as a PNG (headless: no display needed): each metric against depth,
    with the first stage alone as a dashed line, and the reranker's milliseconds per query."""
    require("matplotlib", "bench")
    from matplotlib.figure import Figure

    path = Path(path)
    depths = [d.depth for d in report.depths]
    fig = Figure(figsize=(10, 4), layout="constrained")
    quality, cost = fig.subplots(1, 2)
    for i, (m, base) in enumerate(report.first_stage.items()):
        color = f"C{i}"
        quality.plot(depths, [d.metrics[m] for d in report.depths], marker="o", color=color, label=m)
        quality.axhline(base, color=color, linestyle="--", linewidth=1, label=f"{m}, first stage")
    cost.plot(
        depths,
        [1000 * d.rerank_s / max(report.num_queries, 1) for d in report.depths],
        marker="o",
        color="C3",
    )
    for ax in (quality, cost):
        ax.set_xscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.set_xlabel("rerank depth")
        ax.grid(True, alpha=0.3)
    quality.set_title(f"{report.pipeline} on {report.dataset} [{report.split}]")
    quality.set_ylabel("metric")
    quality.legend(fontsize="small")
    cost.set_title(f"{report.reranker}: cost")
    cost.set_ylabel("ms per query")
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    return path

"""Run a pipeline over a dataset split and score it: what ``cascade eval`` does, in-process."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cascade.indexing.index_set import IndexSet
from cascade.rerank.registry import build_rerankers
from cascade.retrieval.base import Reranker
from cascade.retrieval.pipeline import PipelineSpec
from cascade.retrieval.types import Run

from .datasets import Dataset, cache_dir
from .metrics import evaluate, per_query
from .trec import write_run

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    dataset: str
    split: str
    pipeline: str
    num_queries: int
    metrics: dict[str, float]
    timings_s: dict[str, float]
    per_query: dict[str, dict[str, float]] | None = None

    def to_json(self) -> dict:
        out = {
            "dataset": self.dataset,
            "split": self.split,
            "pipeline": self.pipeline,
            "num_queries": self.num_queries,
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }
        if self.per_query is not None:
            out["per_query"] = self.per_query
        return out


def dataset_index_set(dataset: Dataset) -> IndexSet:
    """The cached index directory of a dataset (keyed by its corpus fingerprint)."""
    return IndexSet(cache_dir() / "indexes" / f"{dataset.name}-{dataset.fingerprint}", dataset.corpus)


def score_run(
    dataset: Dataset, run: Run, metrics: list[str], with_per_query: bool = False
) -> tuple[dict[str, float], dict[str, dict[str, float]] | None]:
    pq = per_query(run, dataset.qrels, metrics, dataset.relevance_level) if with_per_query else None
    agg = evaluate(run, dataset.qrels, metrics, dataset.relevance_level)
    return agg, pq


def evaluate_pipeline(
    dataset: Dataset,
    spec: PipelineSpec,
    metrics: list[str],
    run_out: Path | None = None,
    with_per_query: bool = False,
    rerankers: Sequence[Reranker] | None = None,
) -> tuple[EvalReport, Run]:
    """``rerankers``: the spec's rerank stages already built (an oracle judge, a test's model);
    default: built from the spec."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    pipeline = dataset_index_set(dataset).pipeline(spec, build_rerankers(spec) if rerankers is None else rerankers)
    timings["index_load_or_build"] = time.perf_counter() - t
    # One query first, timed apart: compiling kernels (numba), loading query encoders and
    # rerankers happen once per process and are not the steady search speed a user gets.
    t = time.perf_counter()
    pipeline.search(dataset.queries[:1])
    timings["warmup"] = time.perf_counter() - t
    t = time.perf_counter()
    out = pipeline.search(dataset.queries)
    timings["search"] = time.perf_counter() - t
    timings.update(out.timings_s)
    timings["queries_per_s"] = len(dataset.queries) / max(timings["search"], 1e-9)
    run = {r.query_id: r for r in out.rankings}
    if run_out is not None:
        write_run(run, run_out, tag=spec.name)
    agg, pq = score_run(dataset, run, metrics, with_per_query)
    report = EvalReport(dataset.name, dataset.split, spec.name, len(dataset.queries), agg, timings, pq)
    return report, run

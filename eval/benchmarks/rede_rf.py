"""``cascade bench rede-rf-oracle``: the upper bound of ReDE-RF's relevance feedback.

The LLM is replaced by an oracle that calls a document relevant exactly when the qrels do, so
the figure is what the method reaches with a perfect judge over the first stage's top
``depth``: how much a feedback vector built from the truly relevant candidates' own embeddings
lifts the dense retriever it searches. ``ours`` is ReDE-RF with that oracle, ``baseline`` the
dense retriever alone, ``ratio`` their nDCG@10 quotient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cascade.eval.datasets import load_dataset
from cascade.eval.evaluate import dataset_index_set, evaluate_pipeline
from cascade.rerank.rede_rf import ReDERFReranker
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.models import DEFAULT_DENSE_MODEL
from cascade.retrieval.pipeline import PipelineSpec
from cascade.retrieval.types import Document, Qrels, Query

METRICS = ["ndcg@10", "recall@100"]


class OracleJudge:
    """Relevant iff the qrels grade the (query, document) pair at least ``level``."""

    def __init__(self, qrels: Qrels, level: int = 1):
        self.qrels, self.level = qrels, level
        self.asked = 0

    def judge(self, queries: Sequence[Query], docs: Sequence[Sequence[Document]]) -> list[list[bool]]:
        self.asked += sum(len(ds) for ds in docs)
        return [
            [self.qrels.get(q.id, {}).get(d.id, 0) >= self.level for d in ds]
            for q, ds in zip(queries, docs, strict=True)
        ]


def oracle_spec(first: str, depth: int, model: str, dtype: str | None = None, k: int = 100) -> PipelineSpec:
    """``first``: ``bm25`` (the dense list rides along with weight 0: it is the index searched
    again), ``dense`` or ``hybrid`` (both, fused by RRF, as the paper's first stage)."""
    dense = {"retriever": "dense", "depth": depth, "params": _params(model, dtype)}
    retrievers = {
        "bm25": [{"retriever": "bm25", "depth": depth}, {**dense, "weight": 0}],
        "dense": [dense],
        "hybrid": [{"retriever": "bm25", "depth": 100}, {**dense, "depth": 100}],
    }
    if first not in retrievers:
        raise InvalidInput(f"first stage {first!r}: use bm25, dense or hybrid")
    return PipelineSpec.parse({"retrievers": retrievers[first], "rerankers": [{"reranker": "rede-rf", "depth": depth}],
                               "k": k}, name=f"{first}+rede-rf-oracle@{depth}")  # fmt: skip


def run(dataset_dir: Path, device: str | None = None, first: str = "bm25", depth: int = 20,
        model: str = DEFAULT_DENSE_MODEL, dtype: str | None = None, split: str = "test") -> dict:  # fmt: skip
    """Dense alone against ReDE-RF with the oracle judge over ``first``'s top ``depth``;
    ``dtype``: the dense encoder's (``bf16`` encodes a corpus several times faster on a CPU with
    AMX), one index for both sides."""
    ds = load_dataset(dataset_dir, split)
    dense_spec = PipelineSpec.parse({"retrievers": [{"retriever": "dense", "depth": 1000, "params": _params(model, dtype)}],
                                     "k": 1000}, name="dense")  # fmt: skip
    base, _ = evaluate_pipeline(ds, dense_spec, METRICS)
    judge = OracleJudge(ds.qrels, ds.relevance_level)
    spec = oracle_spec(first, depth, model, dtype)
    ours, run_ = evaluate_pipeline(ds, spec, METRICS, rerankers=[ReDERFReranker(judge=judge)])
    with_feedback = sum(
        any(ds.qrels.get(q.id, {}).get(d, 0) >= ds.relevance_level for d in first_ids)
        for q, first_ids in _first_stage_ids(ds, spec)
    )
    return {
        "benchmark": "rede-rf-oracle",
        "dataset": ds.name,
        "ours": {
            "name": spec.name,
            **{m: round(v, 4) for m, v in ours.metrics.items()},
            "queries_with_a_relevant_candidate": with_feedback,
            "num_queries": len(ds.queries),
        },  # fmt: skip
        "baseline": {"name": f"dense ({model})", **{m: round(v, 4) for m, v in base.metrics.items()}},
        "ratio": round(ours.metrics["ndcg@10"] / max(base.metrics["ndcg@10"], 1e-12), 4),
    }


def _params(model: str, dtype: str | None) -> dict:
    """The dense stage's build parameters: none for the default model, so the index the
    ``dense`` preset built for this dataset is the one reused."""
    params = {} if model == DEFAULT_DENSE_MODEL else {"model": model}
    return params if dtype is None else {**params, "dtype": dtype}


def _first_stage_ids(ds, spec: PipelineSpec):
    """Each query with its first stage's top ``depth`` ids (what the judge read)."""
    depth = spec.rerankers[0].depth
    pipeline = dataset_index_set(ds).pipeline(spec.model_copy(update={"rerankers": []}))
    rankings, _ = pipeline.first_stage(ds.queries)
    return [(q, r.doc_ids[:depth]) for q, r in zip(ds.queries, rankings, strict=True)]

"""Reranker families found by name, and the stages of a pipeline built from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cascade.retrieval.base import Reranker
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.pipeline import PipelineSpec
from cascade.retrieval.registry import Registry

#: Reranker families: each class scores (query, document) candidates.
RERANKERS = Registry(
    "reranker",
    {
        "cross-encoder": "cascade.rerank.cross_encoder:CrossEncoderReranker",
        "monot5": "cascade.rerank.t5:MonoT5Reranker",
        "rankt5": "cascade.rerank.t5:RankT5Reranker",
        "listwise": "cascade.rerank.listwise:ListwiseReranker",
        "first": "cascade.rerank.listwise:FirstReranker",
        "colbert": "cascade.rerank.colbert:ColBERTReranker",
        "rede-rf": "cascade.rerank.rede_rf:ReDERFReranker",
    },
)

RerankerFactory = Callable[[str, dict[str, Any]], Reranker]


def check_rerankers(spec: PipelineSpec) -> PipelineSpec:
    """The spec, once every reranker stage names a registered family.

    Raises:
        InvalidInput: naming the stage and the valid families.
    """
    for stage in spec.rerankers:
        if stage.reranker not in RERANKERS:
            raise InvalidInput(
                f"pipeline {spec.name!r}: unknown reranker {stage.reranker!r}; "
                f"valid: {', '.join(RERANKERS.names()) or '(none installed)'}"
            )
    return spec


def load_reranker(name: str, params: dict[str, Any]) -> Reranker:
    """A reranker of family ``name`` built in this process with ``params``."""
    return RERANKERS.get(name)(**params)


def build_rerankers(spec: PipelineSpec, factory: RerankerFactory = load_reranker) -> list[Reranker]:
    """One reranker per stage of ``spec``, in order (``factory`` may load them elsewhere, e.g. on Ray)."""
    check_rerankers(spec)
    return [factory(s.reranker, dict(s.params)) for s in spec.rerankers]

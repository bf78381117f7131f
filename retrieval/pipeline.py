"""Pipelines: first-stage retrievers, fused, then a cascade of rerankers.

A pipeline is data (:class:`PipelineSpec`, validated when parsed; preset names and files are
resolved by :func:`cascade.eval.presets.resolve_pipeline`) plus the loaded components
(:class:`Pipeline`). Who loads the components decides where indexes live: the evaluation CLI
caches them per dataset, the service per collection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .base import FeedbackReranker, Reranker, Retriever
from .errors import InvalidInput
from .fusion import fuse
from .registry import RETRIEVERS
from .types import Document, Query, Ranking


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrieverStage(_Strict):
    retriever: str
    depth: int = Field(100, ge=1, le=100_000, description="hits taken from this retriever")
    weight: float = Field(1.0, ge=0, description="its weight in fusion")
    params: dict[str, Any] = Field(default_factory=dict, description="index build parameters")
    search: dict[str, Any] = Field(default_factory=dict, description="search-time parameters")


class FusionSpec(_Strict):
    method: Literal["rrf", "minmax", "zscore", "dbsf"] = "rrf"
    k: int = Field(60, ge=0, description="RRF's rank constant")


class RerankStage(_Strict):
    reranker: str
    depth: int = Field(100, ge=1, le=10_000, description="candidates this stage reads")
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(_Strict):
    name: str = "custom"
    retrievers: list[RetrieverStage] = Field(min_length=1)
    fusion: FusionSpec = FusionSpec()
    rerankers: list[RerankStage] = Field(default_factory=list)
    k: int = Field(100, ge=1, le=100_000, description="hits returned per query")

    def model_post_init(self, _: Any) -> None:
        for stage in self.retrievers:
            if stage.retriever not in RETRIEVERS:
                raise InvalidInput(
                    f"pipeline {self.name!r}: unknown retriever {stage.retriever!r}; "
                    f"valid: {', '.join(RETRIEVERS.names())}"
                )

    @classmethod
    def parse(cls, data: dict[str, Any], name: str | None = None) -> PipelineSpec:
        """Validate a spec given as plain data; errors become one readable line."""
        if name is not None:
            data = {"name": name, **data}
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in e.errors()
            )
            raise InvalidInput(f"invalid pipeline spec: {problems}") from None

class DocumentSource(Protocol):
    """Where rerankers read document text from (a docstore)."""

    def get_many(self, ids: Sequence[str]) -> list[Document]: ...


@dataclass
class PipelineOutput:
    """``stages``: with ``trace``, each stage's whole list per query, in pipeline order, named as
    in ``timings_s`` (a repeated name gets ``#2``, ``#3``)."""

    rankings: list[Ranking]
    timings_s: dict[str, float] = field(default_factory=dict)
    stages: list[tuple[str, list[Ranking]]] | None = None

    def stage_ranks(self, query: int, ids: Sequence[str]) -> list[dict[str, int]]:
        """For each id, its 1-based rank in each traced stage's list for query number ``query``;
        a stage whose list lacks the id is left out (the id entered later, or was cut there)."""
        out: list[dict[str, int]] = [{} for _ in ids]
        for name, rankings in self.stages or ():
            pos = {d: r for r, d in enumerate(rankings[query].doc_ids, start=1)}
            for ranks, i in zip(out, ids, strict=True):
                if i in pos:
                    ranks[name] = pos[i]
        return out


class Pipeline:
    """Loaded components for a :class:`PipelineSpec`.

    Args:
        spec: the validated spec.
        retrievers: one loaded retriever per ``spec.retrievers`` entry, same order.
        rerankers: one reranker per ``spec.rerankers`` entry, in order
            (:func:`cascade.rerank.registry.build_rerankers` builds them from the spec).
        docs: document source for the rerankers; required when there are rerankers.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        retrievers: Sequence[Retriever],
        rerankers: Sequence[Reranker] = (),
        docs: DocumentSource | None = None,
    ):
        if len(retrievers) != len(spec.retrievers):
            raise InvalidInput(f"{len(spec.retrievers)} retriever stages but {len(retrievers)} retrievers")
        if len(rerankers) != len(spec.rerankers):
            raise InvalidInput(f"{len(spec.rerankers)} reranker stages but {len(rerankers)} rerankers")
        if rerankers and docs is None:
            raise InvalidInput("rerankers need a document source")
        self.spec, self.retrievers, self.rerankers, self.docs = spec, list(retrievers), list(rerankers), docs

    def search(self, queries: Sequence[Query], k: int | None = None, trace: bool = False) -> PipelineOutput:
        """``trace``: keep every stage's lists in the output's ``stages`` (each hit's rank per
        stage, as the search console shows it); off by default."""
        k = k or self.spec.k
        stages: list[tuple[str, list[Ranking]]] | None = [] if trace else None
        rankings, timings = self.first_stage(queries, stages)
        for stage, reranker in zip(self.spec.rerankers, self.rerankers, strict=True):
            t = time.perf_counter()
            rankings = self.rerank_stage(stage, reranker, queries, rankings)
            timings[f"rerank:{stage.reranker}"] = time.perf_counter() - t
            _keep(stages, f"rerank:{stage.reranker}", rankings)
        return PipelineOutput([r.top(k) for r in rankings], timings, stages)

    def first_stage(
        self, queries: Sequence[Query], trace: list[tuple[str, list[Ranking]]] | None = None
    ) -> tuple[list[Ranking], dict[str, float]]:
        """Every retriever at its depth, fused when there are several: the rankings the rerank
        stages start from (whole, not cut to ``k``), and the time each step took. ``trace``: a
        list to append each retriever's and the fusion's lists to (see :meth:`search`)."""
        timings: dict[str, float] = {}
        per_retriever = []
        for stage, retriever in zip(self.spec.retrievers, self.retrievers, strict=True):
            t = time.perf_counter()
            per_retriever.append(retriever.search(queries, k=stage.depth, **stage.search))
            key = f"retrieve:{stage.retriever}"
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t
            _keep(trace, key, per_retriever[-1])
        if len(per_retriever) == 1:
            return per_retriever[0], timings
        t = time.perf_counter()
        f = self.spec.fusion
        weights = [s.weight for s in self.spec.retrievers]
        rankings = [fuse(list(rs), f.method, weights, f.k) for rs in zip(*per_retriever, strict=True)]
        timings[f"fuse:{f.method}"] = time.perf_counter() - t
        _keep(trace, f"fuse:{f.method}", rankings)
        return rankings, timings

    def rerank_stage(
        self, stage: RerankStage, reranker: Reranker, queries: Sequence[Query], rankings: Sequence[Ranking]
    ) -> list[Ranking]:
        """One rerank stage over ``rankings``: the top ``stage.depth`` of each reordered by
        ``reranker``, the rest kept in order beneath them (a depth sweep calls this once per depth)."""
        if self.docs is None:
            raise InvalidInput("rerankers need a document source")
        cands = [r.top(stage.depth) for r in rankings]
        docs = [self.docs.get_many(list(c.doc_ids)) for c in cands]
        if isinstance(reranker, FeedbackReranker):
            reranked = reranker.rerank_with_retrievers(queries, docs, self.retrievers)
        else:
            reranked = reranker.rerank_batch(queries, docs)
        return [_stack(rr, c_all, stage.depth) for rr, c_all in zip(reranked, rankings, strict=True)]


def _keep(trace: list[tuple[str, list[Ranking]]] | None, name: str, rankings: Sequence[Ranking]) -> None:
    if trace is None:
        return
    taken = {n for n, _ in trace}
    unique, i = name, 1
    while unique in taken:  # two stages of one family (say BM25 over two analyzers)
        i += 1
        unique = f"{name}#{i}"
    trace.append((unique, list(rankings)))


def _stack(reranked: Ranking, previous: Ranking, depth: int) -> Ranking:
    """Reranked top ``depth`` first, then the rest of the previous ranking below them (less any
    document the stage already placed: a feedback stage may rank documents from below its depth)."""
    head = set(reranked.doc_ids)
    rest_ids = tuple(d for d in previous.doc_ids[depth:] if d not in head)
    if not rest_ids:
        return reranked
    floor = min(reranked.scores, default=0.0)
    # keep the tail's order with scores strictly below the reranked head
    rest_scores = tuple(floor - 1.0 - i for i in range(len(rest_ids)))
    return Ranking(reranked.query_id, reranked.doc_ids + rest_ids, reranked.scores + rest_scores)

"""The reranker contract: adapters only score; the base class sorts and cuts once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from cascade.retrieval import base
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.types import Document, Query, Ranking


class Reranker(base.Reranker, ABC):
    """Scores (query, document) candidates; :meth:`rerank` turns scores into a ranking.

    Implements the pipeline's :class:`cascade.retrieval.base.Reranker` protocol.

    Subclasses implement :meth:`score`; those that can batch across queries (a
    cross-encoder filling a token budget) override :meth:`score_many` as well.
    """

    name: str = "reranker"

    @abstractmethod
    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        """One relevance score per document, higher is better."""

    def score_many(self, queries: Sequence[str], docs: Sequence[Sequence[Document]]) -> list[np.ndarray]:
        return [self.score(q, d) if len(d) else np.zeros(0) for q, d in zip(queries, docs, strict=True)]

    def rerank(self, query: Query, candidates: Sequence[Document], top_k: int | None = None) -> Ranking:
        return self.rerank_batch([query], [candidates], top_k)[0]

    def rerank_batch(
        self, queries: Sequence[Query], candidates: Sequence[Sequence[Document]], top_k: int | None = None
    ) -> list[Ranking]:
        """Rerank each query's candidates; an empty candidate list gives an empty ranking."""
        all_scores = self.score_many([q.text for q in queries], candidates)
        return [
            Ranking.from_scores(q.id, [d.id for d in docs], np.asarray(s, dtype=np.float64), top_k)
            for q, docs, s in zip(queries, candidates, all_scores, strict=True)
        ]


class PairwiseReranker(Reranker):
    """A reranker that scores (query, document) pairs independently (cross-encoders, T5):
    the pairs of all queries are flattened into one call, so batches fill across queries."""

    @abstractmethod
    def score_pairs(self, firsts: Sequence[str], seconds: Sequence[str]) -> np.ndarray:
        """Scores of (query, document text) pairs, in input order."""

    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        return self.score_many([query], [docs])[0]

    def score_many(self, queries: Sequence[str], docs: Sequence[Sequence[Document]]) -> list[np.ndarray]:
        if len(queries) != len(docs):
            raise InvalidInput(f"{len(queries)} queries but {len(docs)} candidate lists")
        firsts = [q for q, ds in zip(queries, docs, strict=True) for _ in ds]
        seconds = [d.contents for ds in docs for d in ds]
        scores = self.score_pairs(firsts, seconds)
        bounds = np.cumsum([0] + [len(ds) for ds in docs])
        return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

"""The reranker contract: adapters only score; the base class sorts and cuts once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from retrieval.types import Document, Query, Ranking


class Reranker(ABC):
    """Scores (query, document) candidates; :meth:`rerank` turns scores into a ranking.

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

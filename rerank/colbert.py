"""Late-interaction reranking: exact MaxSim over token vectors encoded on the fly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cascade.retrieval.encoders.colbert import ColBERTEncoder, MultiVectors
from cascade.retrieval.late.maxsim import MaxSim
from cascade.retrieval.types import Document

from .base import Reranker


class ColBERTReranker(Reranker):
    """Rerank candidates by exact MaxSim, encoding their text with a :class:`ColBERTEncoder`.

    Args: the :class:`ColBERTEncoder` arguments (model id or path, device, dtype, batch size...).
    """

    name = "colbert"

    def __init__(self, model: str = "sentence-transformers/all-MiniLM-L6-v2", **encoder_args):
        self.encoder = ColBERTEncoder(model, **encoder_args)

    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        return self.score_many([query], [docs])[0]

    def score_many(self, queries: Sequence[str], docs: Sequence[Sequence[Document]]) -> list[np.ndarray]:
        flat = [d.contents for group in docs for d in group]
        qv = self.encoder.encode_queries(list(queries))
        scorer = MaxSim(self.encoder.encode_documents(flat), device=str(self.encoder.device))
        out, start = [], 0
        for i, group in enumerate(docs):
            rows = np.arange(start, start + len(group))
            one = MultiVectors(qv[i], np.array([0, len(qv[i])]))
            out.append(scorer.score_candidates(one, rows) if len(group) else np.zeros(0))
            start += len(group)
        return out

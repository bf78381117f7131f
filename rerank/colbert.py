"""Late-interaction reranking: exact MaxSim over token vectors encoded on the fly."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from cascade.retrieval.encoders.colbert import ColBERTEncoder, MultiVectors
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.late.maxsim import MaxSim
from cascade.retrieval.types import Document

from .base import Reranker


class ColBERTReranker(Reranker):
    """Rerank candidates by exact MaxSim, encoding their text with a :class:`ColBERTEncoder`.

    Args:
        model, **encoder_args: the :class:`ColBERTEncoder` arguments (model id or path, device,
            dtype, batch size...).
        doc_cache: keep the token vectors of up to this many documents (least recently used
            dropped first), keyed by id and text: a document's vectors do not depend on the
            query, so candidates seen before are not encoded again. 0: none.
    """

    name = "colbert"

    def __init__(self, model: str = "sentence-transformers/all-MiniLM-L6-v2", doc_cache: int = 0, **encoder_args):
        if doc_cache < 0:
            raise InvalidInput(f"doc_cache must be >= 0, got {doc_cache}")
        self.encoder = ColBERTEncoder(model, **encoder_args)
        self.doc_cache = doc_cache
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _encode_documents(self, docs: Sequence[Document]) -> MultiVectors:
        if not self.doc_cache:
            return self.encoder.encode_documents([d.contents for d in docs])
        keys = [(d.id, d.contents) for d in docs]
        with self._lock:
            missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            fresh = self.encoder.encode_documents([text for _, text in missing])
            rows = {k: np.array(fresh[i]) for i, k in enumerate(missing)}
        else:
            rows = {}
        with self._lock:
            for k in keys:
                if k in self._cache:
                    rows.setdefault(k, self._cache[k])
                    self._cache.move_to_end(k)
            self._cache.update(rows)
            while len(self._cache) > self.doc_cache:
                self._cache.popitem(last=False)
        return MultiVectors.from_list([rows[k] for k in keys], dim=self.encoder.dim)

    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        return self.score_many([query], [docs])[0]

    def score_many(self, queries: Sequence[str], docs: Sequence[Sequence[Document]]) -> list[np.ndarray]:
        qv = self.encoder.encode_queries(list(queries))
        out: list[np.ndarray] = []
        # queries go in groups of about MAX_DOCS_PER_PASS candidates: the token vectors of a
        # pass are held at once (300 queries x 200 SciFact candidates would be about 23 GB)
        for lo, hi in _passes([len(g) for g in docs], MAX_DOCS_PER_PASS):
            flat = [d for group in docs[lo:hi] for d in group]
            scorer = MaxSim(self._encode_documents(flat), device=str(self.encoder.device))
            start = 0
            for i in range(lo, hi):
                rows = np.arange(start, start + len(docs[i]))
                one = MultiVectors(qv[i], np.array([0, len(qv[i])]))
                out.append(scorer.score_candidates(one, rows) if len(docs[i]) else np.zeros(0))
                start += len(docs[i])
        return out


#: candidates whose token vectors one scoring pass holds (a query's own list is never split)
MAX_DOCS_PER_PASS = 2048


def _passes(sizes: Sequence[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive ranges of queries, each with at most ``limit`` candidates (or one query)."""
    out, lo, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > lo and total + n > limit:
            out.append((lo, i))
            lo, total = i, 0
        total += n
    if lo < len(sizes):
        out.append((lo, len(sizes)))
    return out

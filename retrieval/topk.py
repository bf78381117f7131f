"""Exact top-k selection over score arrays, shared by every index family.

Ties are broken by doc id ascending, like :meth:`Ranking.from_scores`, but through a
precomputed integer rank of each id (:func:`id_ranks`), so no string is compared on the
hot path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from operator import itemgetter

import numpy as np
import scipy.sparse as sp

from .types import Ranking


def id_ranks(doc_ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """Position of each doc id in sorted id order (the tie-break key)."""
    ids = np.asarray(doc_ids, dtype=str)
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return ranks


def ranking_from_arrays(query_id: str, doc_index: np.ndarray, scores: np.ndarray, doc_ids: Sequence[str]) -> Ranking:
    """A ranking from doc numbers and scores already in rank order."""
    idx = doc_index.tolist()
    if not idx:
        return Ranking(query_id, (), ())
    ids = itemgetter(*idx)(doc_ids)
    return Ranking(query_id, ids if len(idx) > 1 else (ids,), tuple(scores.tolist()))


def doc_names(doc_ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """The doc ids as an object array of Python strings, for :func:`rankings_from_rows`
    (build it once per index: one fancy index then names every hit of a batch)."""
    names = np.empty(len(doc_ids), dtype=object)
    names[:] = doc_ids.tolist() if isinstance(doc_ids, np.ndarray) else list(doc_ids)
    return names


def rankings_from_rows(
    query_ids: Sequence[str], docs: np.ndarray, scores: np.ndarray, counts: np.ndarray, names: np.ndarray
) -> list[Ranking]:
    """Rankings from (queries, k) arrays of doc numbers and scores in rank order, ``counts``
    hits in each row (the compiled kernels' output); ``names`` from :func:`doc_names`.

    Every conversion runs once over the batch, not per row: for fast exact sparse queries,
    building rankings is a sizeable share of the query time, and a per-row loop pays Python's
    per-call overhead for every query.
    """
    if len(query_ids) != len(docs):
        raise ValueError(f"{len(query_ids)} query ids for {len(docs)} rows")
    k = docs.shape[1]
    if len(names) == 0:
        return [Ranking(q, (), ()) for q in query_ids]
    rows, values = names[docs].tolist(), scores.tolist()  # a -1 (no hit) names a doc, cut here:
    for i in np.flatnonzero(counts < k).tolist():
        c = int(counts[i])
        rows[i], values[i] = rows[i][:c], values[i][:c]
    new = object.__new__
    out = [new(Ranking) for _ in rows]  # see _SET_FIELDS
    for set_field, column in zip(_SET_FIELDS, (query_ids, map(tuple, rows), map(tuple, values)), strict=True):
        deque(map(set_field, out, column), maxlen=0)
    return out


# Ranking is a frozen dataclass: its generated __init__ goes through object.__setattr__ for
# each field, which costs more than writing the slots directly. Only rows the kernels built
# (ordered, same lengths) take this way in.
_SET_FIELDS = tuple(getattr(Ranking, name).__set__ for name in ("query_id", "doc_ids", "scores"))


def top_k_ranking(
    query_id: str,
    doc_index: np.ndarray,
    scores: np.ndarray,
    doc_ids: Sequence[str],
    ranks: np.ndarray,
    k: int,
) -> Ranking:
    """The exact top ``k`` of ``scores`` (over documents ``doc_index``), ties by doc id.

    Every document tied with the k-th score stays a candidate until the final sort, so the
    cut never depends on the order argpartition happened to leave them in.
    """
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        doc_index, scores = doc_index[keep], scores[keep]
    order = np.lexsort((ranks[doc_index], -scores))[:k]
    return ranking_from_arrays(query_id, doc_index[order], scores[order], doc_ids)


def top_k_sparse_rows(
    query_ids: Sequence[str], scores: sp.csr_matrix, doc_ids: Sequence[str], ranks: np.ndarray, k: int
) -> list[Ranking]:
    """One ranking per row of a (queries x documents) sparse score matrix.

    Only stored entries are hits (a document that matched no query term is not returned).
    Row by row rather than a dense block with a vectorized argpartition: a dense block
    partitions every document, where a row holds only its matches.
    """
    ptr, idx, data = scores.indptr, scores.indices, scores.data
    return [
        top_k_ranking(q, idx[ptr[i] : ptr[i + 1]], data[ptr[i] : ptr[i + 1]], doc_ids, ranks, k)
        for i, q in enumerate(query_ids)
    ]

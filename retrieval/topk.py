"""Exact top-k selection over score arrays, shared by every index family.

Ties are broken by doc id ascending, like :meth:`Ranking.from_scores`, but through a
precomputed integer rank of each id (:func:`id_ranks`), so no string is compared on the
hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .types import Ranking


def id_ranks(doc_ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """Position of each doc id in sorted id order (the tie-break key)."""
    ids = np.asarray(doc_ids, dtype=str)
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return ranks


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
    return Ranking(
        query_id,
        tuple([doc_ids[i] for i in doc_index[order].tolist()]),
        tuple(scores[order].tolist()),
    )

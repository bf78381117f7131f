"""BM25's query loop compiled with numba (extra ``fast``): term-at-a-time accumulation of the
precomputed term weights into a dense per-document array, then an exact top-k with the same
tie-break as everywhere else (:func:`retrieval.impact_kernel._offer`).

Scores equal the scipy path's up to float32 summation order; the scipy path stays the
fallback when numba is not installed.
"""

from __future__ import annotations

import numpy as np

from .impact_kernel import AVAILABLE, _jit, _offer

__all__ = ["AVAILABLE", "score_top_k"]


@_jit
def score_top_k(q_indptr, q_terms, q_weights, t_indptr, postings, weights, n_docs, k, id_rank):
    """For each query row, the top ``k`` documents: (doc index, score, count) arrays."""
    n_q = len(q_indptr) - 1
    out_docs = np.zeros((n_q, k), dtype=np.int64)
    out_scores = np.zeros((n_q, k), dtype=np.float32)
    counts = np.zeros(n_q, dtype=np.int64)
    acc = np.zeros(n_docs, dtype=np.float32)
    seen = np.zeros(n_docs, dtype=np.bool_)
    touched = np.empty(n_docs, dtype=np.int64)
    for r in range(n_q):
        nt = 0
        for j in range(q_indptr[r], q_indptr[r + 1]):
            t, w = q_terms[j], q_weights[j]
            for p in range(t_indptr[t], t_indptr[t + 1]):
                d = postings[p]
                if not seen[d]:
                    seen[d] = True
                    touched[nt] = d
                    nt += 1
                acc[d] += w * weights[p]
        # the k-th best score first (one partition, linear), so that only documents at or
        # above it go through the ordered insertion
        kth = -np.inf
        if nt > k:
            vals = np.empty(nt, dtype=np.float32)
            for i in range(nt):
                vals[i] = acc[touched[i]]
            kth = np.partition(vals, nt - k)[nt - k]
        count = 0
        for i in range(nt):
            d = touched[i]
            if acc[d] >= kth:
                count = _offer(r, d, acc[d], k, id_rank, out_docs, out_scores, count)
            acc[d] = 0.0
            seen[d] = False
        counts[r] = count
    return out_docs, out_scores, counts

"""The arrays of an impact index, built from a (docs x terms) matrix of integer impacts.

Kept apart from :class:`cascade.retrieval.sparse.impact.ImpactRetriever`, which validates the input, owns
the format (save, load) and searches it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .impact_approx import ApproxParams, build_blocks, term_ranks
from .impact_search import Postings
from .vectors import id_dtype, impact_dtype

#: Highest-impact postings kept per term for the numpy engine's score lower bound.
HEAD_SIZE = 16


def index_arrays(
    doc_ids, matrix: sp.csr_matrix, n_terms: int, approx: ApproxParams | None
) -> tuple[dict[str, np.ndarray], np.dtype]:
    """Postings (term -> docs ascending), per-term maxima, head lists and approximate blocks.

    Args:
        doc_ids: document ids in row order.
        matrix: validated non-negative integer impacts, one row per document (zeros dropped here).
        n_terms: vocabulary size.
        approx: approximate-mode parameters, or None for no blocks.

    Returns:
        The arrays the index saves, and the impact dtype (the smallest that holds them).
    """
    m = sp.csr_matrix(matrix)
    m.eliminate_zeros()
    post = sp.csc_matrix(m)  # terms become the major axis; row (doc) indexes come out sorted
    post.sort_indices()
    dtype = impact_dtype(int(post.data.max()) if post.nnz else 0)
    full = Postings(post.indptr.astype(np.int64), post.indices.astype(np.int32), post.data.astype(dtype))
    max_impact = np.zeros(n_terms, dtype=dtype)
    lengths = np.diff(full.indptr)
    nonempty = lengths > 0
    if nonempty.any():
        max_impact[nonempty] = np.maximum.reduceat(full.impacts, full.indptr[:-1][nonempty])
    order, rank = term_ranks(full)
    head = np.zeros(len(full.docs), dtype=bool)
    head[order[rank < HEAD_SIZE]] = True
    head_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(np.repeat(np.arange(n_terms), lengths)[head], minlength=n_terms), out=head_ptr[1:])
    arrays = {
        "doc_ids": np.asarray(doc_ids, dtype=str), "indptr": full.indptr, "docs": full.docs,
        "impacts": full.impacts, "max_impact": max_impact, "head_indptr": head_ptr,
        "head_docs": full.docs[head], "head_impacts": full.impacts[head],
    }  # fmt: skip
    if approx is not None:
        forward = forward_postings(m, dtype)
        arrays.update(build_blocks(full, forward, approx, (order, rank)))
    return arrays, dtype


def forward_postings(matrix: sp.csr_matrix, dtype: np.dtype) -> Postings:
    """The impacts by document (doc -> terms ascending, ids in :func:`id_dtype`)."""
    if not matrix.has_sorted_indices:
        matrix = matrix.sorted_indices()  # a copy: the caller's matrix may share these arrays
    return Postings(matrix.indptr.astype(np.int64), matrix.indices.astype(id_dtype(matrix.shape[1])),
                    matrix.data.astype(dtype))  # fmt: skip

"""Sparse vectors for learned-sparse retrieval: validation, quantization, vocabulary identity.

Every learned-sparse component (the SPLADE encoder, the impact index, SLIM, the Lucene
export) exchanges vectors as ``scipy.sparse.csr_matrix`` rows over one vocabulary, and
identifies that vocabulary by its size and a hash, so an index never meets a query encoder
from another model silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from cascade.retrieval.errors import IndexMismatch, InvalidInput

log = logging.getLogger(__name__)


def vocab_hash(vocab: Sequence[str]) -> str:
    """A short, stable fingerprint of a vocabulary (terms in id order)."""
    return hashlib.sha256(json.dumps(list(vocab)).encode()).hexdigest()[:16]


def check_vocab(index_size: int, index_hash: str, size: int, hash_: str, what: str) -> None:
    """Raise :class:`IndexMismatch` unless two vocabularies are the same."""
    if (index_size, index_hash) != (size, hash_):
        raise IndexMismatch(
            f"{what} uses a vocabulary of {size} terms (hash {hash_}) but the index was built with "
            f"{index_size} terms (hash {index_hash}); encode queries with the index's model"
        )


def impact_dtype(max_impact: int) -> np.dtype:
    """The smallest unsigned integer type that holds every impact."""
    if max_impact < 0:
        raise InvalidInput("impacts must be >= 0")
    if max_impact <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if max_impact <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    raise InvalidInput(f"impact {max_impact} does not fit in 16 bits; lower the quantization scale")


def id_dtype(count: int) -> np.dtype:
    """The integer type for ids in ``range(count)`` (term ids, block numbers) that the
    approximate mode streams: uint16 up to 65,536 (BERT's 30,522-term vocabulary fits), int32
    above. The approximate mode is memory-bound, so two bytes per id instead of four matter."""
    return np.dtype(np.uint16) if count <= 1 << 16 else np.dtype(np.int32)


def quantize(matrix: sp.csr_matrix, scale: float) -> sp.csr_matrix:
    """Round ``weight * scale`` to integers (uint8/uint16), dropping entries that become 0.

    Args:
        matrix: non-negative float weights, one row per vector.
        scale: multiplier applied before rounding (SPLADE indexes commonly use 100).

    Returns:
        A CSR matrix with sorted column indices and an unsigned integer dtype.

    Raises:
        InvalidInput: negative or non-finite weights, or a non-positive scale.
    """
    if not scale > 0:
        raise InvalidInput(f"quantization scale must be > 0, got {scale}")
    m = sp.csr_matrix(matrix, copy=True)
    if m.nnz and (not np.isfinite(m.data).all() or m.data.min() < 0):
        raise InvalidInput("sparse weights must be finite and >= 0 to be quantized")
    values = np.rint(m.data.astype(np.float64) * scale)
    dtype = impact_dtype(int(values.max()) if len(values) else 0)
    m.data = values
    m.eliminate_zeros()
    m.sort_indices()
    m.data = m.data.astype(dtype)
    return m


def vectors_to_csr(
    vectors: sp.spmatrix | Sequence[Mapping[str, float]],
    vocab: Sequence[str],
    term_index: Mapping[str, int] | None = None,
) -> sp.csr_matrix:
    """Queries given as a CSR matrix or as ``{term: weight}`` dicts -> CSR over ``vocab``.

    Terms a dict names that the vocabulary lacks cannot match any posting; they are dropped
    and logged once per call.

    Raises:
        IndexMismatch: a matrix whose width is not the vocabulary size.
        InvalidInput: negative or non-finite weights, or another type of input.
    """
    n_terms = len(vocab)
    if sp.issparse(vectors):
        m = sp.csr_matrix(vectors)
        if m.shape[1] != n_terms:
            raise IndexMismatch(
                f"query vectors have {m.shape[1]} dimensions but the index vocabulary has {n_terms} terms"
            )
    elif isinstance(vectors, Sequence) and all(isinstance(v, Mapping) for v in vectors):
        term_index = term_index if term_index is not None else {t: i for i, t in enumerate(vocab)}
        indptr, cols, vals, unknown = [0], [], [], 0
        for v in vectors:
            for term, weight in v.items():
                col = term_index.get(term)
                if col is None:
                    unknown += 1
                    continue
                cols.append(col)
                vals.append(weight)
            indptr.append(len(cols))
        if unknown:
            log.info("%d query terms are not in the index vocabulary and were dropped", unknown)
        m = sp.csr_matrix(
            (np.asarray(vals, dtype=np.float64), np.asarray(cols, dtype=np.int64), np.asarray(indptr)),
            shape=(len(vectors), n_terms),
        )
        m.sum_duplicates()
    else:
        raise InvalidInput("query vectors must be a scipy sparse matrix or a list of {term: weight} dicts")
    if m.nnz and (not np.isfinite(m.data).all() or m.data.min() < 0):
        raise InvalidInput("query weights must be finite and >= 0")
    # a sorted copy: a caller's CSR matrix shares its arrays with ``m`` and stays as it was
    return m if m.has_sorted_indices else m.sorted_indices()


def prune_rows(matrix: sp.csr_matrix, top_k: int | None) -> sp.csr_matrix:
    """Keep the ``top_k`` largest entries of each row (ties: lower column first)."""
    m = sp.csr_matrix(matrix)
    if top_k is None or m.nnz == 0 or np.diff(m.indptr).max() <= top_k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((m.indices, -m.data.astype(np.float64), rows))
    rank = np.arange(m.nnz) - m.indptr[rows[order]]
    keep = np.sort(order[rank < top_k])
    out = sp.csr_matrix((m.data[keep], m.indices[keep], np.r_[0, np.cumsum(np.bincount(rows[keep],
                        minlength=m.shape[0]))]), shape=m.shape)  # fmt: skip
    return out

"""Top-k over impact postings, vectorized with numpy over a batch of queries.

The algorithm is MaxScore, reorganized so that no Python loop runs per posting or per
document (at SciFact scale a loop would cost more than the scoring it saves):

1. A lower bound ``theta`` of each query's k-th best score comes from the *head* of every
   query term's posting list (its few highest impacts): partial scores summed over heads
   never exceed true scores, so the k-th best partial score is a safe bound.
2. Query terms are sorted by their upper bound (query weight x the term's largest impact).
   The longest prefix of low-bound terms whose bounds sum to less than ``theta`` is
   *non-essential*: a document found only in those lists cannot reach ``theta``.
3. Postings of the essential terms (rare, high-idf terms: a small part of the postings) are
   accumulated for the whole batch with one ``bincount``.
4. Documents whose essential score plus the non-essential bound reaches ``theta`` are
   completed exactly by looking their remaining impacts up in the full index (one
   ``searchsorted`` over a globally sorted ``term * n_docs + doc`` key).
5. Survivors are sorted by score descending, doc id ascending, and cut to k.

Every document that could tie the k-th score survives to step 5, so the output equals a
brute-force sparse dot product ranked by :meth:`Ranking.from_scores`, ties included.

This is the engine used without numba (exact mode only); with numba the compiled kernels
of :mod:`cascade.retrieval.sparse.impact_kernel` run instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Float query weights make sums order-dependent in the last bits; pruning decisions use a
# bound lowered by this relative slack so rounding never drops a document that ties.
_SLACK = 1e-9


@dataclass(frozen=True)
class Postings:
    """One set of posting lists in CSR layout: term t owns ``docs[indptr[t]:indptr[t+1]]``."""

    indptr: np.ndarray  # int64, n_terms + 1
    docs: np.ndarray  # int32, ascending within a term
    impacts: np.ndarray  # uint8 / uint16


def ragged_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + l) for s, l in zip(starts, lengths))`` without a loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(starts, np.int64) - offsets, lengths)


def _gather(lists: Postings, rows: np.ndarray, terms: np.ndarray, weights: np.ndarray, n_docs: int):
    """Every posting of the given (row, term, weight) triples: keys row * n_docs + doc, weight * impact, row."""
    starts = lists.indptr[terms]
    lengths = lists.indptr[terms + 1] - starts
    pos = ragged_positions(starts, lengths)
    key_rows = np.repeat(rows, lengths)
    keys = key_rows.astype(np.int64) * n_docs + lists.docs[pos]
    return keys, np.repeat(weights, lengths) * lists.impacts[pos], key_rows


def _segment_starts(sorted_rows: np.ndarray, n_rows: int) -> np.ndarray:
    return np.searchsorted(sorted_rows, np.arange(n_rows + 1))


def theta_lower_bound(
    heads: Postings,
    rows: np.ndarray,
    terms: np.ndarray,
    weights: np.ndarray,
    n_rows: int,
    n_docs: int,
    k: int,
) -> np.ndarray:
    """Per query, the k-th best partial score over the head postings of its terms (0 if < k docs)."""
    keys, values, _ = _gather(heads, rows, terms, weights, n_docs)
    theta = np.zeros(n_rows)
    if len(keys) == 0:
        return theta
    uniq, inverse = np.unique(keys, return_inverse=True)
    partial = np.bincount(inverse, values)
    return _kth_per_row(uniq // n_docs, partial, n_rows, k)


def _kth_per_row(rows: np.ndarray, scores: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """The k-th largest score of each row (0 where a row has fewer than k); rows ascending."""
    out = np.zeros(n_rows)
    if len(rows) == 0:
        return out
    order = np.lexsort((-scores, rows))
    bounds = _segment_starts(rows[order], n_rows)
    kth = bounds[:-1] + k - 1
    has_k = kth < bounds[1:]
    out[has_k] = scores[order][kth[has_k]]
    return out


@dataclass(frozen=True)
class BatchResult:
    """Top hits of a batch, flat: query row, doc index and score, grouped by row in rank order."""

    rows: np.ndarray
    docs: np.ndarray
    scores: np.ndarray
    bounds: np.ndarray  # hits of row r are [bounds[r], bounds[r+1])


class Lookup:
    """Impact of (term, doc) pairs, vectorized: dense rows for common terms, binary search otherwise.

    Common terms are the ones the pruning leaves non-essential, so their impacts are the ones
    looked up most; a dense row (one cell per document) answers with one gather. Terms are
    given a row when their list holds at least 1/``dense_divisor`` of the documents, so a
    row costs at most ``2 * dense_divisor`` bytes per posting it covers.
    """

    def __init__(self, full: Postings, n_docs: int, dense_divisor: int = 32, max_cells: int = 1 << 26):
        self.full, self.n_docs = full, n_docs
        lengths = np.diff(full.indptr)
        term = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        self.postkey = term * n_docs + full.docs
        common = np.flatnonzero(lengths * dense_divisor >= n_docs)
        common = common[np.argsort(-lengths[common], kind="stable")][: max(0, max_cells // max(1, n_docs))]
        self.slot = np.full(len(lengths), -1, dtype=np.int64)
        self.slot[common] = np.arange(len(common))
        self.dense = np.zeros((len(common), n_docs), dtype=full.impacts.dtype)
        for i, t in enumerate(common.tolist()):  # one row per common term: a few hundred at most
            lo, hi = full.indptr[t], full.indptr[t + 1]
            self.dense[i, full.docs[lo:hi]] = full.impacts[lo:hi]

    def __call__(self, terms: np.ndarray, docs: np.ndarray) -> np.ndarray:
        out = np.zeros(len(terms), dtype=np.float64)
        slot = self.slot[terms]
        dense = slot >= 0
        out[dense] = self.dense[slot[dense], docs[dense]]
        sparse = np.flatnonzero(~dense)
        if len(sparse):
            key = terms[sparse] * self.n_docs + docs[sparse]
            at = np.minimum(np.searchsorted(self.postkey, key), len(self.postkey) - 1)
            found = self.postkey[at] == key
            out[sparse[found]] = self.full.impacts[at[found]]
        return out


def _complete(lookup: Lookup, cand_row, cand_doc, rows, terms, weights, n_rows) -> np.ndarray:
    """For each candidate, the sum of weight x impact over the given terms of its query row."""
    ptr = _segment_starts(rows, n_rows)
    counts = ptr[cand_row + 1] - ptr[cand_row]
    pair = ragged_positions(ptr[cand_row], counts)
    owner = np.repeat(np.arange(len(cand_row)), counts)
    contrib = weights[pair] * lookup(terms[pair], cand_doc[owner])
    return np.bincount(owner, contrib, minlength=len(cand_row))


def top_k_batch(
    lookup: Lookup,
    max_impact: np.ndarray,
    heads: Postings,
    id_rank: np.ndarray,
    rows: np.ndarray,
    terms: np.ndarray,
    weights: np.ndarray,
    n_rows: int,
    k: int,
) -> BatchResult:
    """Exact top k of a batch of queries (MaxScore, vectorized).

    Args:
        lookup: impact lookups in the index's full posting lists.
        max_impact: per term, its largest impact.
        heads: per term, its highest-impact postings (for the theta bound).
        id_rank: per doc index, the rank of its id in string order (the tie-break).
        rows, terms, weights: the batch's query terms, flat, rows ascending, weights > 0.
        n_rows: queries in the batch.
        k: hits per query.
    """
    n_docs = len(id_rank)
    weights = weights.astype(np.float64)
    bound = theta_lower_bound(heads, rows, terms, weights, n_rows, n_docs, k) * (1.0 - _SLACK)

    # Non-essential terms: the longest prefix (by upper bound, ascending) summing below theta.
    ub = weights * max_impact[terms]
    order = np.lexsort((ub, rows))
    rows, terms, weights, ub = rows[order], terms[order], weights[order], ub[order]
    csum = np.cumsum(ub)
    first = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)
    before_row = np.maximum.accumulate(np.where(first, csum - ub, 0.0)) if len(rows) else csum
    non_essential = (csum - before_row) < bound[rows]
    ne_bound = np.bincount(rows[non_essential], ub[non_essential], minlength=n_rows)
    ess = ~non_essential

    keys, values, key_rows = _gather(lookup.full, rows[ess], terms[ess], weights[ess], n_docs)
    acc = np.bincount(keys, values, minlength=n_rows * n_docs)

    # Candidates: essential score + what the non-essential terms could add reaches theta.
    passing = keys[acc[keys] + ne_bound[key_rows] >= bound[key_rows]]
    if len(passing) * 8 < n_rows * n_docs:
        cand = np.unique(passing)
    else:  # a dense mask dedupes large sets faster than a sort
        mask = np.zeros(n_rows * n_docs, dtype=bool)
        mask[passing] = True
        cand = np.flatnonzero(mask)
    cand_row = cand // n_docs
    cand_doc = cand - cand_row * n_docs
    scores = acc[cand]
    # Essential scores are lower bounds of true scores, so the k-th best of any subset of
    # them is a bound too: ranking only those already above theta keeps the sort small.
    top = scores >= bound[cand_row]
    kth = _kth_per_row(cand_row[top], scores[top], n_rows, k) * (1.0 - _SLACK)
    bound = np.maximum(bound, kth)
    alive = scores + ne_bound[cand_row] >= bound[cand_row]
    cand_row, cand_doc, scores = cand_row[alive], cand_doc[alive], scores[alive]

    # Complete the survivors with their non-essential impacts.
    if non_essential.any() and len(cand_row):
        ne = non_essential
        scores = scores + _complete(lookup, cand_row, cand_doc, rows[ne], terms[ne], weights[ne], n_rows)

    keep = (scores >= bound[cand_row]) & (scores > 0)
    cand_row, cand_doc, scores = cand_row[keep], cand_doc[keep], scores[keep]
    order = np.lexsort((id_rank[cand_doc], -scores, cand_row))
    cand_row, cand_doc, scores = cand_row[order], cand_doc[order], scores[order]
    starts = _segment_starts(cand_row, n_rows)
    rank = np.arange(len(cand_row)) - starts[cand_row]
    top = rank < k
    cand_row, cand_doc, scores = cand_row[top], cand_doc[top], scores[top]
    return BatchResult(cand_row, cand_doc, scores, _segment_starts(cand_row, n_rows))


#: Dense accumulator budget per batch (queries x documents cells).
_ACC_CELLS = 1 << 19


def top_k_arrays(lookup: Lookup, max_impact: np.ndarray, heads: Postings, id_rank: np.ndarray,
                 indptr: np.ndarray, terms: np.ndarray, weights: np.ndarray, k: int):  # fmt: skip
    """:func:`top_k_batch` over CSR query arrays in memory-bounded batches.

    Returns:
        (docs (n, k) int64 with -1 past each count, scores (n, k), counts), like the compiled kernels.
    """
    n, n_docs = len(indptr) - 1, len(id_rank)
    docs, scores, counts = np.full((n, k), -1, dtype=np.int64), np.zeros((n, k)), np.zeros(n, dtype=np.int64)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    batch = max(1, min(256, _ACC_CELLS // n_docs))
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        sel = slice(indptr[start], indptr[stop])
        res = top_k_batch(lookup, max_impact, heads, id_rank, rows[sel] - start, terms[sel], weights[sel],
                          stop - start, k)  # fmt: skip
        row = res.rows + start
        col = np.arange(len(row)) - res.bounds[res.rows]
        docs[row, col], scores[row, col] = res.docs, res.scores
        counts[start:stop] = np.diff(res.bounds)
    return docs, scores, counts

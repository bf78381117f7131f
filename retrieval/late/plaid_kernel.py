"""PLAID search on the CPU, compiled with numba (extra ``fast``), one query at a time.

Same stages and results as the batched torch search of :mod:`cascade.retrieval.late.plaid_search`; on
a CPU, compiled loops over one query's candidates beat tensor ops over padded (query,
document) pairs, which materialize every bag of every candidate. Per query:

1. the query-centroid scores come from one BLAS product for the whole batch, then each
   query's block is transposed centroid-major (``scores[c, t]``: one centroid's scores for
   all of its tokens are contiguous, so a bag of centroids is a walk over short rows);
2. candidates: the documents under each token's top ``ncells`` centroids, deduplicated
   with a per-document stamp (no sort, no set);
3. centroid interaction over pruned bags (centroids whose best token score is below the
   threshold count as ``PRUNED``), best ``ndocs``; then over full bags, best ``ndocs / 4``;
4. decode only those documents' residuals and rank them by exact MaxSim (see :func:`exact_scores`).
"""

from __future__ import annotations

import numpy as np

from cascade.retrieval.compiled import jit

PRUNED = np.float32(-1.0e4)  # as the torch path (PLAID's -9999): finite, so such a document stays a candidate


@jit
def _top_cells(scores, ncells):
    """The ``ncells`` best centroids of each query token (column of ``scores``), any order.

    One pass over the rows (contiguous), a small sorted list per token.
    """
    kc, lq = scores.shape
    best = np.full((lq, ncells), -np.inf, np.float32)
    ids = np.zeros((lq, ncells), np.int64)
    for c in range(kc):
        for t in range(lq):
            s = scores[c, t]
            if s > best[t, ncells - 1]:
                j = ncells - 1
                while j > 0 and best[t, j - 1] < s:
                    best[t, j] = best[t, j - 1]
                    ids[t, j] = ids[t, j - 1]
                    j -= 1
                best[t, j] = s
                ids[t, j] = c
    return ids


@jit
def _bag_score(scores, lq, bag_codes, start, end, keep, use_keep, acc):
    """Approximate MaxSim of one document: per query token, the max over its bag's centroids."""
    for t in range(lq):
        acc[t] = PRUNED
    for j in range(start, end):
        c = bag_codes[j]
        if use_keep and not keep[c]:
            continue
        for t in range(lq):
            s = scores[c, t]
            if s > acc[t]:
                acc[t] = s
    total = np.float32(0.0)
    for t in range(lq):
        total += acc[t]
    return total


@jit
def _keep_best(cands, approx, n):
    """The ``n`` best candidates by approximate score (stable: earlier candidates win ties)."""
    order = np.argsort(-approx, kind="mergesort")[:n]
    return cands[np.sort(order)]


@jit
def candidates(
    scores, ncells, threshold, ndocs, k,
    ivf_indptr, ivf_pids, bag_offsets, bag_codes, stamp, stamp_value,
):  # fmt: skip
    """Stages 1-3 for one query.

    Args:
        scores: (num centroids, query tokens) float32 query-centroid scores, C-contiguous
            (per query: a batch-wide matrix would put each bag lookup in a cold cache line).
        stamp: (num docs,) int64 scratch; ``stamp_value`` must differ from every value in it.

    Returns:
        the surviving document indices, ascending.
    """
    kc, lq = scores.shape
    # 1. candidates: cells first (deduplicated), then their documents
    if ncells >= kc:
        cells = np.arange(kc)
        n_cells = kc
    else:
        top = _top_cells(scores, ncells).ravel()
        cell_seen = np.zeros(kc, np.bool_)
        cells = np.empty(len(top), np.int64)
        n_cells = 0
        for c in top:
            if not cell_seen[c]:
                cell_seen[c] = True
                cells[n_cells] = c
                n_cells += 1
    total = 0
    for i in range(n_cells):
        total += ivf_indptr[cells[i] + 1] - ivf_indptr[cells[i]]
    cands = np.empty(total, np.int64)
    n = 0
    for i in range(n_cells):
        c = cells[i]
        for j in range(ivf_indptr[c], ivf_indptr[c + 1]):
            d = ivf_pids[j]
            if stamp[d] != stamp_value:
                stamp[d] = stamp_value
                cands[n] = d
                n += 1
    cands = np.sort(cands[:n])
    # 2-3. centroid interaction: pruned bags keep ndocs, full bags keep ndocs / 4
    keep = np.empty(kc, np.bool_)
    for c in range(kc):
        best = -np.inf
        for t in range(lq):
            if scores[c, t] > best:
                best = scores[c, t]
        keep[c] = best >= threshold
    acc = np.empty(lq, np.float32)
    for stage in range(2):
        limit = ndocs if stage == 0 else max(ndocs // 4, k)
        if len(cands) <= limit:
            continue
        approx = np.empty(len(cands), np.float32)
        for i in range(len(cands)):
            d = cands[i]
            approx[i] = _bag_score(scores, lq, bag_codes, bag_offsets[d], bag_offsets[d + 1], keep, stage == 0, acc)
        cands = _keep_best(cands, approx, limit)
    return cands


@jit
def inverse_norms(codes, residuals, centroids, table):
    """1 / ||centroid + residual|| of every token (computed once per index, kept in memory)."""
    per_byte = table.shape[1]
    out = np.empty(len(codes), np.float32)
    for e in range(len(codes)):
        c = codes[e]
        norm = 0.0
        for b in range(residuals.shape[1]):
            byte = residuals[e, b]
            for j in range(per_byte):
                v = centroids[c, b * per_byte + j] + table[byte, j]
                norm += v * v
        out[e] = 1.0 / np.sqrt(norm) if norm > 0 else 0.0
    return out


@jit
def exact_scores(docs, scores, q, doc_offsets, codes, residuals, table, inv_norms):
    """MaxSim of one query against the decompressed tokens of ``docs``.

    ``q . normalize(c + r) = (q . c + q . r) / ||c + r||``: the ``q . c`` terms are the
    query-centroid ``scores`` already at hand and the norms are precomputed, so only the
    residuals are decoded (from a 256-row table) and multiplied with the query in one BLAS
    call; no centroid row is read (on a CPU those random reads cost more than the math).
    """
    lq, dim = q.shape
    per_byte = table.shape[1]
    starts = np.empty(len(docs) + 1, np.int64)
    starts[0] = 0
    for i in range(len(docs)):
        starts[i + 1] = starts[i] + doc_offsets[docs[i] + 1] - doc_offsets[docs[i]]
    res = np.empty((starts[-1], dim), np.float32)
    row = 0
    for i in range(len(docs)):
        for e in range(doc_offsets[docs[i]], doc_offsets[docs[i] + 1]):
            for b in range(residuals.shape[1]):
                tb = table[residuals[e, b]]
                for j in range(per_byte):
                    res[row, b * per_byte + j] = tb[j]
            row += 1
    sim = np.dot(res, q.T)  # (doc tokens, Lq)
    out = np.empty(len(docs), np.float32)
    best = np.empty(lq, np.float32)
    for i in range(len(docs)):
        best[:] = -np.inf
        row = starts[i]
        for e in range(doc_offsets[docs[i]], doc_offsets[docs[i] + 1]):
            c, w = codes[e], inv_norms[e]
            for t in range(lq):
                v = (sim[row, t] + scores[c, t]) * w
                if v > best[t]:
                    best[t] = v
            row += 1
        out[i] = best.sum() if starts[i + 1] > starts[i] else -np.inf
    return out


def gather_docs(docs: np.ndarray, doc_offsets: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored (uncompressed) token vectors of ``docs`` and their starts, in numpy."""
    lens = doc_offsets[docs + 1] - doc_offsets[docs]
    starts = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(lens, out=starts[1:])
    pos = np.repeat(doc_offsets[docs] - starts[:-1], lens) + np.arange(starts[-1])
    return np.asarray(vectors[pos], np.float32), starts

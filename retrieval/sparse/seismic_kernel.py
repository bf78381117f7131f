"""The impact index's approximate mode (Seismic, Bruch et al., SIGIR 2024), compiled with
numba when it is installed (extra ``fast``); the layout it reads is described in
:mod:`cascade.retrieval.sparse.impact_approx`.

- :func:`seismic_top_k`: the heaviest query terms only; their statically pruned lists are
  clustered into blocks of similar documents, each with a quantized summary vector; blocks
  are visited by descending summary score and skipped once that score falls below
  ``heap_factor`` x the current k-th score; documents of the blocks visited are scored
  exactly through a forward index. Same outputs as :func:`cascade.retrieval.sparse.impact_kernel.exact_top_k`.
- :func:`cluster_lists`, :func:`block_summaries` and :func:`summary_columns`: build those
  blocks and summaries at index time.
"""

from __future__ import annotations

import numpy as np

from cascade.retrieval.compiled import inline, jit

from .impact_kernel import insert_hit


@inline
def _dot(terms, values, a, e, qbits, qv):
    """Dot product of the sparse row ``terms/values[a:e]`` (a document's forward row) with the
    query: ``qv`` dense, ``qbits`` a bitmap of its terms.

    The row is scanned and only terms whose bit is set are gathered and added. The bitmap
    (a few KB) stays in L1 and its test is rarely true, so the loop runs at load speed with
    no floating-point add chained through every entry and no binary search of each query
    term in the row.
    """
    s = 0.0
    for p in range(np.uintp(a), np.uintp(e)):
        t = np.uintp(terms[p])
        if qbits[t >> np.uintp(6)] & (np.uint64(1) << (t & np.uintp(63))):
            s += qv[t] * values[p]
    return s


@inline
def _summary_dots(c0, c1, col_terms, col_ptr, col_blocks, col_values, scale, q_terms, q_weights, lo, hi):
    """Summary dot products with the query of every block of one list, its summaries given
    by term: columns ``c0:c1`` (terms ascending), each the (block, value) pairs of a term.

    Only the query's columns are read, a few hundred entries, where the blocks' summary rows
    hold tens of thousands (on a large corpus, reading whole rows makes the approximate mode
    memory-bound).
    Query terms ascend, as row terms did, so each dot adds the same products in the same order.
    """
    dots = np.zeros(len(scale))
    for j in range(lo, hi):
        t = q_terms[j]
        g = c0 + np.searchsorted(col_terms[c0:c1], t)
        if g < c1 and col_terms[g] == t:
            w = q_weights[j]
            for p in range(np.uintp(col_ptr[g]), np.uintp(col_ptr[g + 1])):
                dots[np.uintp(col_blocks[p])] += w * col_values[p]
            c0 = g + 1
    for b in range(len(scale)):
        dots[b] *= scale[b]
    return dots


@inline
def _distinct_terms(terms, a, e, count, used):
    """The distinct terms of ``terms[a:e]`` into ``used`` (returns how many), each one's
    occurrences added to ``count``."""
    nu = 0
    for p in range(a, e):
        u = terms[p]
        if count[u] == 0:
            used[nu] = u
            nu += 1
        count[u] += 1
    return nu


@jit
def summary_columns(term_blocks, summary_ptr, summary_terms, summary_values, n_terms):
    """The block summaries of each list regrouped by term: (list_cols (lists + 1), col_terms,
    col_ptr, col_blocks (block number within its list), col_values). List ``t``'s columns are
    ``list_cols[t]:list_cols[t + 1]``, terms ascending; a column's blocks ascend."""
    n_lists, n_entries = len(term_blocks) - 1, len(summary_terms)
    count = np.zeros(n_terms, dtype=np.int64)
    used = np.empty(n_terms, dtype=np.int64)
    list_cols = np.zeros(n_lists + 1, dtype=np.int64)
    for t in range(n_lists):  # columns per list first: the arrays below are allocated exactly
        nu = _distinct_terms(summary_terms, summary_ptr[term_blocks[t]], summary_ptr[term_blocks[t + 1]], count,
                             used)  # fmt: skip
        for i in range(nu):
            count[used[i]] = 0
        list_cols[t + 1] = list_cols[t] + nu
    col_terms = np.empty(list_cols[n_lists], dtype=np.int32)
    col_ptr = np.zeros(list_cols[n_lists] + 1, dtype=np.int64)
    col_blocks = np.empty(n_entries, dtype=np.int32)
    col_values = np.empty(n_entries, dtype=np.uint8)
    slot = np.empty(n_terms, dtype=np.int64)
    nc = 0
    for t in range(n_lists):
        b0, b1 = term_blocks[t], term_blocks[t + 1]
        nu = _distinct_terms(summary_terms, summary_ptr[b0], summary_ptr[b1], count, used)
        pos = summary_ptr[b0]  # the list's entries keep their span, only their order changes
        for u in np.sort(used[:nu]):
            col_terms[nc] = u
            slot[u] = pos
            pos += count[u]
            count[u] = 0
            nc += 1
            col_ptr[nc] = pos
        for b in range(b0, b1):
            for p in range(summary_ptr[b], summary_ptr[b + 1]):
                u = summary_terms[p]
                col_blocks[slot[u]] = b - b0
                col_values[slot[u]] = summary_values[p]
                slot[u] += 1
    return list_cols, col_terms, col_ptr, col_blocks, col_values


@jit
def seismic_top_k(
    term_blocks, block_ptr, block_docs, list_cols, col_terms, col_ptr, col_blocks, col_values, summary_scale,
    fwd_ptr, fwd_terms, fwd_impacts, id_rank, max_impact, q_indptr, q_terms, q_weights, k, query_terms,
    heap_factor, slack,
):  # fmt: skip
    """Approximate top ``k`` (Seismic): same outputs as :func:`exact_top_k`.

    Scores of the documents returned are exact dot products with the whole query; what is
    approximate is which documents get scored. Block summaries come by list and term
    (:func:`summary_columns`). ``slack`` lowers the skip threshold a hair so
    float rounding in a summary never skips a block that could tie.
    """
    n_q, n_docs = len(q_indptr) - 1, len(id_rank)
    out_docs = np.full((n_q, k), -1, dtype=np.int64)
    out_scores = np.zeros((n_q, k))
    counts = np.zeros(n_q, dtype=np.int64)
    qv = np.zeros(len(max_impact))
    qbits = np.zeros((len(max_impact) + 63) // 64, dtype=np.uint64)
    seen = np.zeros(n_docs, dtype=np.bool_)
    seen_list = np.empty(n_docs, dtype=np.int64)
    best_s, best_d = np.empty(k), np.empty(k, dtype=np.int64)
    for r in range(n_q):
        lo, hi = q_indptr[r], q_indptr[r + 1]
        for j in range(lo, hi):
            qv[q_terms[j]] = q_weights[j]
            qbits[q_terms[j] >> 6] |= np.uint64(1) << np.uint64(q_terms[j] & 63)
        # the query term cut keeps the terms that can add the most (weight x largest impact):
        # with flat query weights (bag-of-words counts) the weight alone would pick at random
        ub = np.empty(hi - lo)
        for j in range(lo, hi):
            ub[j - lo] = q_weights[j] * max_impact[q_terms[j]]
        cut = np.argsort(-ub, kind="mergesort")[:query_terms]
        m, ns = 0, 0
        for jj in cut:
            t = q_terms[lo + jj]
            b0, nb = term_blocks[t], term_blocks[t + 1] - term_blocks[t]
            dots = _summary_dots(list_cols[t], list_cols[t + 1], col_terms, col_ptr, col_blocks, col_values,
                                 summary_scale[b0 : b0 + nb], q_terms, q_weights, lo, hi)  # fmt: skip
            for b in np.argsort(-dots):  # most promising blocks first: the k-th score rises fast
                if m == k and dots[b] < heap_factor * best_s[k - 1] * (1.0 - slack):
                    break  # the rest score lower still
                for p in range(block_ptr[b0 + b], block_ptr[b0 + b + 1]):
                    d = block_docs[p]
                    if seen[d]:
                        continue
                    seen[d] = True
                    seen_list[ns] = d
                    ns += 1
                    s = _dot(fwd_terms, fwd_impacts, fwd_ptr[d], fwd_ptr[d + 1], qbits, qv)
                    if s > 0.0 and (m < k or s >= best_s[k - 1]):
                        m = insert_hit(best_s, best_d, m, k, d, s, id_rank)
        for i in range(ns):
            seen[seen_list[i]] = False
        for j in range(lo, hi):
            qv[q_terms[j]] = 0.0
            qbits[q_terms[j] >> 6] = np.uint64(0)
        out_scores[r, :m] = best_s[:m]
        out_docs[r, :m] = best_d[:m]
        counts[r] = m
    return out_docs, out_scores, counts


@jit
def cluster_lists(kept_ptr, kept_docs, fwd_ptr, fwd_terms, fwd_impacts, top_terms, top_values, n_terms,
                  block_size, seed):  # fmt: skip
    """Seismic's blocking: each kept list longer than ``block_size`` gets ceil(n / block_size)
    centroids, documents of the list drawn at random; every document joins the centroid with
    the largest dot product between its top components (``top_terms``/``top_values`` rows)
    and the centroid's whole vector. Returns each kept posting's cluster number in its list.

    Similar documents then share a block, so a block summary stays close to each of its
    documents and bounds them tightly enough to skip whole blocks.
    """
    np.random.seed(seed)
    assign = np.zeros(len(kept_docs), dtype=np.int64)
    dense = np.zeros(n_terms)
    for t in range(len(kept_ptr) - 1):
        a, e = kept_ptr[t], kept_ptr[t + 1]
        n = e - a
        if n <= block_size:
            continue
        centroids = np.random.choice(n, -(-n // block_size), replace=False)
        best = np.full(n, -1.0)
        for j in range(len(centroids)):
            c = kept_docs[a + centroids[j]]
            for p in range(fwd_ptr[c], fwd_ptr[c + 1]):
                dense[fwd_terms[p]] = fwd_impacts[p]
            for i in range(n):
                d = kept_docs[a + i]
                s = 0.0
                for q in range(top_terms.shape[1]):
                    s += dense[top_terms[d, q]] * top_values[d, q]
                if s > best[i]:
                    best[i] = s
                    assign[a + i] = j
            for p in range(fwd_ptr[c], fwd_ptr[c + 1]):
                dense[fwd_terms[p]] = 0.0
    return assign


@jit
def block_summaries(block_ptr, block_docs, fwd_ptr, fwd_terms, fwd_impacts, n_terms, energy):
    """Per block, the max impact of each term over its documents, cut to ``energy`` of its mass.

    Returns CSR arrays (ptr, terms ascending, uint8 values, float32 scale per block); a value
    times its block's scale is at least the kept maximum (rounded up), so with ``energy`` 1
    a summary's dot product bounds every document of its block.
    """
    n_blocks = len(block_ptr) - 1
    ptr = np.zeros(n_blocks + 1, dtype=np.int64)
    cap = max(16, len(block_docs) * 8)
    terms = np.empty(cap, dtype=np.int32)
    values = np.empty(cap, dtype=np.uint8)
    scale = np.zeros(n_blocks, dtype=np.float32)
    dense = np.zeros(n_terms)
    used = np.empty(n_terms, dtype=np.int64)
    for b in range(n_blocks):
        nu = 0
        for p in range(block_ptr[b], block_ptr[b + 1]):
            d = block_docs[p]
            for f in range(fwd_ptr[d], fwd_ptr[d + 1]):
                t, v = fwd_terms[f], fwd_impacts[f]
                if dense[t] == 0.0:
                    used[nu] = t
                    nu += 1
                if v > dense[t]:
                    dense[t] = v
        vals = np.empty(nu)
        for i in range(nu):
            vals[i] = dense[used[i]]
        hi = vals.max() if nu else 0.0
        if energy >= 1.0:  # every term kept: no sort by value needed
            keep = np.sort(used[:nu])
            kept = nu
        else:
            order = np.argsort(-vals, kind="mergesort")
            total, kept, run = vals.sum(), 0, 0.0
            while kept < nu and (kept == 0 or run < energy * total):
                run += vals[order[kept]]
                kept += 1
            keep = np.sort(used[order[:kept]])
        # float32 scale; the +1e-6 margin keeps value * scale >= max despite its rounding
        sc = np.float32(hi / 255.0 * (1.0 + 1e-6)) if hi > 0 else np.float32(1.0)
        if ptr[b] + kept > cap:
            cap = max(2 * cap, ptr[b] + kept)
            terms2, values2 = np.empty(cap, dtype=np.int32), np.empty(cap, dtype=np.uint8)
            terms2[: ptr[b]], values2[: ptr[b]] = terms[: ptr[b]], values[: ptr[b]]
            terms, values = terms2, values2
        for i in range(kept):
            t = keep[i]
            terms[ptr[b] + i] = t
            values[ptr[b] + i] = min(255, int(np.ceil(dense[t] / sc)))
        scale[b] = sc
        ptr[b + 1] = ptr[b] + kept
        for i in range(nu):
            dense[used[i]] = 0.0
    return ptr, terms[: ptr[n_blocks]].copy(), values[: ptr[n_blocks]].copy(), scale

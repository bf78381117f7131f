"""The impact index's search loops, compiled with numba when it is installed (extra ``fast``).

Each kernel takes a whole batch of queries as CSR arrays and returns ``(n_queries, k)``
doc-index and score arrays plus a hit count per query: no Python runs per query or per
posting. Ties are broken by ``id_rank`` (the rank of each doc id in string order), the
order :meth:`Ranking.from_scores` gives.

- :func:`exact_top_k`: term-at-a-time over the full posting lists into a dense score
  accumulator, then a k-selection: over the documents touched when they are few, else over
  chunks of 8 documents whose maximum reaches a bound of the k-th score; up to k=32 through a
  sorted buffer, above through score buckets. It reads every posting of the query's terms
  once, sequentially, with no per-posting branch; BM25 uses it too. A compiled MaxScore (it
  lived here before) was slower on SciFact, 64 us against 13 us per query (5k docs, 4.4k
  postings per query), and so was a term-at-a-time MaxScore that completes candidates by
  lookups (19 us against 11: each lookup is a cache miss); on a 207k-doc synthetic corpus
  (``cascade bench sparse --opt scale=40``) this kernel runs 5.2x faster than scipy's brute
  force. Without numba the vectorized MaxScore of :mod:`retrieval.impact_search` runs instead.
- :func:`seismic_top_k`: the approximate mode (Seismic, Bruch et al., SIGIR 2024): the
  heaviest query terms only; their statically pruned lists are clustered into blocks of
  similar documents, each with a quantized summary vector; blocks are visited by descending
  summary score and skipped once that score falls below ``heap_factor`` x the current k-th
  score; documents of the blocks visited are scored exactly through a forward index.
- :func:`cluster_lists` and :func:`block_summaries`: build those blocks and summaries at
  index time.

Without numba ``_jit`` is the identity, so the same functions run as plain (slow) Python.
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    _jit = numba.njit(cache=True, nogil=True)
    _inline = numba.njit(cache=True, nogil=True, inline="always")
except ImportError:  # pragma: no cover - callers require numba for the hot paths
    numba = None

    def _jit(f):
        return f

    _inline = _jit


AVAILABLE = numba is not None


@_inline
def _insert(best_s, best_d, m, k, d, s, id_rank):
    """Insert (d, s) into a sorted top-k buffer holding ``m`` hits; returns the new count.

    Local 1-D buffers, not rows of the output: writes into a 2-D output inside the loop
    measured 2x slower (numba cannot keep them out of memory).
    """
    if m == k:
        if s < best_s[k - 1] or (s == best_s[k - 1] and id_rank[d] > id_rank[best_d[k - 1]]):
            return m
        pos = k - 1
    else:
        pos = m
        m += 1
    while pos > 0 and (best_s[pos - 1] < s or (best_s[pos - 1] == s and id_rank[best_d[pos - 1]] > id_rank[d])):
        best_s[pos] = best_s[pos - 1]
        best_d[pos] = best_d[pos - 1]
        pos -= 1
    best_s[pos] = s
    best_d[pos] = d
    return m


@_inline
def _chunk_max(acc, d0):
    """The largest of ``acc[d0:d0 + 8]`` as a tree of selects (no loop-carried dependency)."""
    a0 = acc[d0] if acc[d0] > acc[d0 + 1] else acc[d0 + 1]
    a1 = acc[d0 + 2] if acc[d0 + 2] > acc[d0 + 3] else acc[d0 + 3]
    a2 = acc[d0 + 4] if acc[d0 + 4] > acc[d0 + 5] else acc[d0 + 5]
    a3 = acc[d0 + 6] if acc[d0 + 6] > acc[d0 + 7] else acc[d0 + 7]
    a0 = a0 if a0 > a1 else a1
    a2 = a2 if a2 > a3 else a3
    return a0 if a0 > a2 else a2


#: Up to this k, selections insert into a sorted buffer (a few shifts per insert); above it
#: a histogram of ``_BINS`` score bins finds a bound of the k-th score (linear) and only what
#: reaches it is sorted.
_SMALL_K = 32
_BINS = 256


@_inline
def _min_max(values, n):
    """The smallest and largest of ``values[:n]`` (n >= 1): the range the score bins divide."""
    lo, hi = values[0], values[0]
    for i in range(n):
        v = values[i]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    return lo, hi


@_inline
def _kth_bound(values, n, k):
    """A lower bound of the k-th largest of ``values[:n]`` (0 when there are fewer than k):
    the lower edge of the histogram bin where the count from the top reaches k (linear, at
    most a bin's width low). Small k takes :func:`_scan_chunks` instead."""
    if n < k:
        return 0.0
    lo, hi = _min_max(values, n)
    if hi <= lo:
        return lo
    hist = np.zeros(_BINS + 1, dtype=np.int64)
    scale = _BINS / (hi - lo)
    for i in range(n):
        hist[int((values[i] - lo) * scale)] += 1
    total = 0
    for b in range(_BINS, -1, -1):
        total += hist[b]
        if total >= k:
            # every value in bins >= b is >= this edge; one bin lower guards against rounding
            return max(lo, lo + (b - 1) / scale) if b > 0 else lo
    return lo


@_inline
def _select(cand_d, cand_s, nc, k, id_rank, out_d, out_s, buf):
    """Write the top ``k`` of the ``nc`` candidates, by score desc then ``id_rank`` asc, into
    ``out_d``/``out_s`` (1-D, length >= k); returns how many."""
    if k <= _SMALL_K:
        m, kth = 0, -1.0
        for i in range(nc):
            s = cand_s[i]
            if s >= kth:  # the k-th score so far in a local: the compiled loop keeps it in a register
                m = _insert(out_s, out_d, m, k, cand_d[i], s, id_rank)
                if m == k:
                    kth = out_s[k - 1]
        return m
    return _bucket_select(cand_d, cand_s, nc, k, id_rank, out_d, out_s)


@_inline
def _before(s_a, r_a, s_b, r_b):
    """Whether a hit (score, id rank) ranks before another: score desc, then id rank asc."""
    return s_a > s_b or (s_a == s_b and r_a < r_b)


@_inline
def _bucket_select(cand_d, cand_s, nc, k, id_rank, out_d, out_s):
    """:func:`_select` for large k: candidates bucketed by score into histogram bins (the bin
    is a monotone function of the score, so whole bins from the top hold the top k), then
    each bin of the kept ones sorted on its own (a few entries each). Linear plus small sorts."""
    if nc == 0:
        return 0
    lo, hi = _min_max(cand_s, nc)
    scale = _BINS / (hi - lo) if hi > lo else 0.0
    bins = np.empty(nc, dtype=np.int64)
    start = np.zeros(_BINS + 2, dtype=np.int64)
    for i in range(nc):
        b = _BINS - int((cand_s[i] - lo) * scale)  # 0 holds the highest scores
        bins[i] = b
        start[b + 1] += 1
    last, total = 0, 0
    while last <= _BINS and total < k:  # bins 0..last-1 hold at least k (or everything)
        total += start[last + 1]
        last += 1
    for b in range(last):
        start[b + 1] += start[b]
    order = np.empty(total, dtype=np.int64)
    fill = start[:last].copy()
    for i in range(nc):
        b = bins[i]
        if b < last:
            order[fill[b]] = i
            fill[b] += 1
    for b in range(last):  # sort inside each bin: score desc, id rank asc
        if start[b + 1] - start[b] > 32:  # a crowded bin (many equal scores): no quadratic sort
            run = order[start[b] : start[b + 1]]
            run = run[np.argsort(id_rank[cand_d[run]], kind="mergesort")]
            order[start[b] : start[b + 1]] = run[np.argsort(-cand_s[run], kind="mergesort")]
            continue
        for a in range(start[b] + 1, start[b + 1]):
            x = order[a]
            sx, rx = cand_s[x], id_rank[cand_d[x]]
            j = a - 1
            while j >= start[b] and _before(sx, rx, cand_s[order[j]], id_rank[cand_d[order[j]]]):
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = x
    m = min(total, k)
    for i in range(m):
        out_d[i] = cand_d[order[i]]
        out_s[i] = cand_s[order[i]]
    return m


@_inline
def _scan_chunks(acc, n_chunks, k, buf, keep_c, keep_m, keep_v, cand_d, cand_s):
    """Candidates of the dense path for k <= _SMALL_K, in one pass over the accumulator that
    also zeroes it. Each chunk of 8's maximum enters a sorted buffer of the k largest chunk
    maxima, whose k-th (theta) only rises, so a chunk below the current theta is below the
    final one too; chunks reaching it keep a copy of their values. Returns the count of
    candidates: the kept values reaching the final theta."""
    theta, nb, nk = 0.0, 0, 0
    for c in range(n_chunks):
        d0 = 8 * c
        m = _chunk_max(acc, d0)
        if m > 0.0 and m >= theta:
            for i in range(8):
                keep_v[8 * nk + i] = acc[d0 + i]
            keep_c[nk], keep_m[nk] = c, m
            nk += 1
            pos = nb if nb < k else k - 1
            nb = min(nb + 1, k)
            while pos > 0 and buf[pos - 1] < m:
                buf[pos] = buf[pos - 1]
                pos -= 1
            buf[pos] = m
            if nb == k:
                theta = buf[k - 1]
        for i in range(8):
            acc[d0 + i] = 0.0
    nc = 0
    for j in range(nk):
        if keep_m[j] >= theta:
            for i in range(8):
                s = keep_v[8 * j + i]
                if s > 0.0 and s >= theta:
                    cand_d[nc] = 8 * keep_c[j] + i
                    cand_s[nc] = s
                    nc += 1
    return nc


@_jit
def exact_top_k(indptr, docs, impacts, id_rank, q_indptr, q_terms, q_weights, k):
    """Exact top ``k`` of every query row: (docs (n, k) int64, scores (n, k) float64, counts).

    Impacts and query weights must be > 0 (a zero cell of the accumulator marks an unseen
    document); impacts of any numeric dtype, summed in float64.
    """
    n_q, n_docs = len(q_indptr) - 1, len(id_rank)
    out_docs = np.full((n_q, k), -1, dtype=np.int64)
    out_scores = np.zeros((n_q, k))
    counts = np.zeros(n_q, dtype=np.int64)
    n_chunks = (n_docs + 7) // 8
    acc = np.zeros(n_chunks * 8)  # padded to whole chunks of 8
    chunk_max = np.empty(n_chunks)
    cand_d = np.empty(n_docs + 1, dtype=np.int64)
    cand_s = np.empty(n_docs + 1)
    buf, best_s, best_d = np.empty(k), np.empty(k), np.empty(k, dtype=np.int64)
    keep_c, keep_m, keep_v = np.empty(n_chunks, dtype=np.int64), np.empty(n_chunks), np.empty(n_chunks * 8)
    for r in range(n_q):
        lo, hi = q_indptr[r], q_indptr[r + 1]
        n_postings = 0
        for j in range(lo, hi):
            n_postings += indptr[q_terms[j] + 1] - indptr[q_terms[j]]
        nc = 0
        if n_postings * 4 > n_docs:
            # Most documents are touched: accumulate without bookkeeping, then read chunks
            # of 8. The k-th largest chunk maximum bounds the k-th score from below (k chunks
            # each hold a document that high), so only chunks reaching it hold candidates.
            for j in range(lo, hi):
                t, w = q_terms[j], q_weights[j]
                # unsigned indexes spare numba's negative-index wraparound (a shift, a mask and
                # an add per load): the doc id's took 25% off this loop, the position's 10-20%
                for p in range(np.uintp(indptr[t]), np.uintp(indptr[t + 1])):
                    acc[np.uintp(docs[p])] += w * impacts[p]
            if k <= _SMALL_K:
                nc = _scan_chunks(acc, n_chunks, k, buf, keep_c, keep_m, keep_v, cand_d, cand_s)
            else:
                for c in range(n_chunks):
                    chunk_max[c] = _chunk_max(acc, 8 * c)
                theta = _kth_bound(chunk_max, n_chunks, k)
                for c in range(n_chunks):
                    if chunk_max[c] > 0.0 and chunk_max[c] >= theta:
                        for d in range(8 * c, 8 * c + 8):
                            s = acc[d]
                            if s > 0.0 and s >= theta:
                                cand_d[nc] = d
                                cand_s[nc] = s
                                nc += 1
                acc[:] = 0.0
        else:
            for j in range(lo, hi):
                t, w = q_terms[j], q_weights[j]
                for p in range(np.uintp(indptr[t]), np.uintp(indptr[t + 1])):
                    d = np.uintp(docs[p])
                    # a zero cell is a first visit; recording it without a branch keeps the
                    # loop free of mispredictions
                    cand_d[nc] = d
                    nc += acc[d] == 0.0
                    acc[d] += w * impacts[p]
            for i in range(nc):
                cand_s[i] = acc[cand_d[i]]
                acc[cand_d[i]] = 0.0
        m = _select(cand_d, cand_s, nc, k, id_rank, best_d, best_s, buf)
        out_docs[r, :m] = best_d[:m]
        out_scores[r, :m] = best_s[:m]
        counts[r] = m
    return out_docs, out_scores, counts


@_inline
def _dot(terms, values, a, e, qbits, qv):
    """Dot product of the sparse row ``terms/values[a:e]`` (a document's forward row) with the
    query: ``qv`` dense, ``qbits`` a bitmap of its terms.

    The row is scanned and only terms whose bit is set are gathered and added. The bitmap
    (a few KB) stays in L1 and its test is rarely true, so the loop runs at load speed with
    no floating-point add chained through every entry; it replaced a binary search of each
    query term in the row and a gather of every entry (30% off the approximate query time).
    """
    s = 0.0
    for p in range(np.uintp(a), np.uintp(e)):
        t = np.uintp(terms[p])
        if qbits[t >> np.uintp(6)] & (np.uint64(1) << (t & np.uintp(63))):
            s += qv[t] * values[p]
    return s


@_inline
def _summary_dots(c0, c1, col_terms, col_ptr, col_blocks, col_values, scale, q_terms, q_weights, lo, hi):
    """Summary dot products with the query of every block of one list, its summaries given
    by term: columns ``c0:c1`` (terms ascending), each the (block, value) pairs of a term.

    Only the query's columns are read, a few hundred entries, where the blocks' summary rows
    hold tens of thousands (at 207k docs the rows made the approximate mode memory-bound).
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


@_inline
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


@_jit
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


@_jit
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
                        m = _insert(best_s, best_d, m, k, d, s, id_rank)
        for i in range(ns):
            seen[seen_list[i]] = False
        for j in range(lo, hi):
            qv[q_terms[j]] = 0.0
            qbits[q_terms[j] >> 6] = np.uint64(0)
        out_scores[r, :m] = best_s[:m]
        out_docs[r, :m] = best_d[:m]
        counts[r] = m
    return out_docs, out_scores, counts


@_jit
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


@_jit
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

"""The impact index's exact search loop, compiled with numba when it is installed (extra ``fast``).

This kernel and the approximate one take a whole batch of queries as CSR arrays and return
``(n_queries, k)`` doc-index and score arrays plus a hit count per query: no Python runs per
query or per posting. Ties are broken by ``id_rank`` (the rank of each doc id in string
order), the order :meth:`Ranking.from_scores` gives.

- :func:`exact_top_k`: term-at-a-time over the full posting lists into a dense score
  accumulator, then a k-selection: over the documents touched when they are few, else over
  chunks of 8 documents whose maximum reaches a bound of the k-th score; up to k=32 through a
  sorted buffer, above through score buckets. On a corpus of more than :data:`LARGE_CORPUS`
  documents the accumulator is too large for the cache: the documents are taken in blocks
  whose accumulator stays in it, each term's postings of a block added in turn, with a
  bound of the k-th score that rises as blocks are done. It reads every posting of the
  query's terms once, sequentially, with no per-posting branch; BM25 uses it too. Why not MaxScore: the
  dense accumulator stays in cache and costs little per posting, less than the bookkeeping
  that skipping needs, and completing candidates by lookups makes each lookup a cache miss.
  Without numba the vectorized MaxScore of :mod:`cascade.retrieval.sparse.impact_search` runs instead.

The approximate mode's kernels are in :mod:`cascade.retrieval.sparse.seismic_kernel` and share the sorted
top-k buffer (:func:`insert_hit`) defined here. Without numba the decorators of
:mod:`retrieval.compiled` are the identity, so the same functions run as plain (slow) Python.
"""

from __future__ import annotations

import numpy as np

from cascade.retrieval.compiled import inline, jit


@inline
def insert_hit(best_s, best_d, m, k, d, s, id_rank):
    """Insert (d, s) into a sorted top-k buffer holding ``m`` hits; returns the new count.

    Local 1-D buffers, not rows of the output: numba cannot keep writes into a 2-D output
    inside the loop out of memory.
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


@inline
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


@inline
def _min_max(values, n):
    """The smallest and largest of ``values[:n]`` (n >= 1): the range the score bins divide."""
    lo, hi = values[0], values[0]
    for i in range(n):
        v = values[i]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    return lo, hi


@inline
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


@inline
def _select(cand_d, cand_s, nc, k, id_rank, out_d, out_s, buf):
    """Write the top ``k`` of the ``nc`` candidates, by score desc then ``id_rank`` asc, into
    ``out_d``/``out_s`` (1-D, length >= k); returns how many."""
    if k <= _SMALL_K:
        m, kth = 0, -1.0
        for i in range(nc):
            s = cand_s[i]
            if s >= kth:  # the k-th score so far in a local: the compiled loop keeps it in a register
                m = insert_hit(out_s, out_d, m, k, cand_d[i], s, id_rank)
                if m == k:
                    kth = out_s[k - 1]
        return m
    return _bucket_select(cand_d, cand_s, nc, k, id_rank, out_d, out_s)


@inline
def _before(s_a, r_a, s_b, r_b):
    """Whether a hit (score, id rank) ranks before another: score desc, then id rank asc."""
    return s_a > s_b or (s_a == s_b and r_a < r_b)


@inline
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


@inline
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


#: Documents per block of the large-corpus path: their float64 scores (256 KB) stay in the
#: core's cache while the query's postings of the block are added.
_BLOCK = 1 << 15
#: Corpora of more documents than this take the blocked path: past it the whole accumulator
#: (8 bytes a document) outgrows the core's cache and spans more pages than the TLB maps, so
#: a posting added at random costs a cache and a TLB miss.
LARGE_CORPUS = 1 << 17


@inline
def _blocked_candidates(indptr, docs, impacts, q_terms, q_weights, lo, hi, n_docs, k, block, acc, cur, touched,
                        cand_d, cand_s):  # fmt: skip
    """Candidates on a large corpus, block by block of ``block`` documents: each query
    term's postings of the block (a contiguous run: doc numbers ascend within a term) are
    added into the block's accumulator, the documents touched first recorded as on the
    sparse path; then each touched score is read, zeroed, and kept if it reaches ``theta``.
    ``theta`` only rises: when candidates pile up it becomes a lower bound of their k-th
    score (:func:`_kth_bound`) and those below it go. Returns the count; every document of
    the exact top k (ties included) is among the candidates."""
    for j in range(lo, hi):
        cur[j - lo] = indptr[q_terms[j]]
    theta, nc, limit = 0.0, 0, max(4 * k, 4096)
    for d0 in range(0, n_docs, block):
        d1 = min(d0 + block, n_docs)
        nt = 0
        for j in range(lo, hi):
            t, w = q_terms[j], q_weights[j]
            p = cur[j - lo]
            e = p + np.searchsorted(docs[p : indptr[t + 1]], d1)
            for q in range(np.uintp(p), np.uintp(e)):
                d = np.uintp(docs[q]) - np.uintp(d0)
                touched[nt] = d
                nt += acc[d] == 0.0
                acc[d] += w * impacts[q]
            cur[j - lo] = e
        for i in range(nt):
            d = touched[i]
            s = acc[d]
            acc[d] = 0.0
            if s >= theta:
                cand_d[nc] = d0 + d
                cand_s[nc] = s
                nc += 1
        if nc >= limit:
            theta = max(theta, _kth_bound(cand_s, nc, k))
            kept = 0
            for i in range(nc):
                if cand_s[i] >= theta:
                    cand_d[kept] = cand_d[i]
                    cand_s[kept] = cand_s[i]
                    kept += 1
            nc = kept
            limit = max(limit, 2 * nc)  # many ties at theta: compact less often
    return nc


@jit
def exact_top_k(indptr, docs, impacts, id_rank, q_indptr, q_terms, q_weights, k, large_corpus=LARGE_CORPUS,
                block=_BLOCK):  # fmt: skip
    """Exact top ``k`` of every query row: (docs (n, k) int64, scores (n, k) float64, counts).

    Impacts and query weights must be > 0 (a zero cell of the accumulator marks an unseen
    document); impacts of any numeric dtype, summed in float64. ``large_corpus`` and
    ``block``: corpora of more documents are searched by blocks of that many (tests set
    them low to run the blocked path on small data).
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
    cur = np.empty(max(1, np.max(np.diff(q_indptr)) if n_q else 1), dtype=np.int64)
    touched = np.empty(min(block, n_docs) + 1, dtype=np.int64)
    for r in range(n_q):
        lo, hi = q_indptr[r], q_indptr[r + 1]
        n_postings = 0
        for j in range(lo, hi):
            n_postings += indptr[q_terms[j] + 1] - indptr[q_terms[j]]
        nc = 0
        if n_docs > large_corpus:
            nc = _blocked_candidates(indptr, docs, impacts, q_terms, q_weights, lo, hi, n_docs, k, block, acc,
                                     cur, touched, cand_d, cand_s)  # fmt: skip
        elif n_postings * 4 > n_docs:
            # Most documents are touched: accumulate without bookkeeping, then read chunks
            # of 8. The k-th largest chunk maximum bounds the k-th score from below (k chunks
            # each hold a document that high), so only chunks reaching it hold candidates.
            for j in range(lo, hi):
                t, w = q_terms[j], q_weights[j]
                # unsigned indexes (doc id and position) spare numba's negative-index
                # wraparound: a shift, a mask and an add per load
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

"""The impact index's MaxScore, compiled with numba when it is installed (extra ``fast``).

Same results as the vectorized numpy kernel in :mod:`retrieval.impact_search`; run per
query in compiled loops, the threshold can rise after every term (numpy fixes it per
batch). Per query:

1. Terms are taken by descending upper bound (query weight x largest impact). Their lists
   are accumulated term at a time (sequential reads, a dense accumulator) while the terms
   left could still lift an unseen document to ``theta``, the k-th best partial score
   (partial scores never exceed true scores, so it is a safe bound).
2. Then no unseen document can reach the top k: the seen ones that still can are sorted
   by doc id and completed from the remaining (low-bound, long) lists with forward-only
   galloping cursors, dropped as soon as they cannot reach ``theta``, and ranked by score
   descending, doc id rank ascending.

This is MaxScore in its term-at-a-time form (Turtle and Flood's "max-score", the quit /
continue strategies of Moffat and Zobel): at SciFact scale, compiled, a dense accumulator
over the few heavy lists beats document-at-a-time cursor merging, which pays per posting
for every essential cursor. The approximate mode accumulates statically pruned lists and
rescores the survivors exactly from the full lists.

Bounds are compared with a small relative slack (see ``_SLACK`` in impact_search), so float
rounding never drops a document that ties the k-th score.
"""

from __future__ import annotations

import numpy as np

try:  # this module is imported only when the compiled kernel is asked for
    import numba

    _jit = numba.njit(cache=True, nogil=True)
except ImportError:  # pragma: no cover - callers check AVAILABLE first
    numba = None

    def _jit(f):
        return f


AVAILABLE = numba is not None


@_jit
def _offer(r, d, s, k, id_rank, out_docs, out_scores, count):
    """Insert (d, s) into row r's sorted top-k; returns the new count."""
    m = count
    if m == k:
        ls, ld = out_scores[r, k - 1], out_docs[r, k - 1]
        if s < ls or (s == ls and id_rank[d] > id_rank[ld]):
            return m
        pos = k - 1
    else:
        pos = m
        m += 1
    while pos > 0 and (
        out_scores[r, pos - 1] < s
        or (out_scores[r, pos - 1] == s and id_rank[out_docs[r, pos - 1]] > id_rank[d])
    ):
        out_scores[r, pos] = out_scores[r, pos - 1]
        out_docs[r, pos] = out_docs[r, pos - 1]
        pos -= 1
    out_scores[r, pos] = s
    out_docs[r, pos] = d
    return m


@_jit
def _advance(docs, lo, hi, d):
    """First position in docs[lo:hi] holding a doc >= d, by galloping from ``lo``.

    Cursors only move forward and mostly by a little, so an exponential probe followed by
    a binary search touches few cache lines.
    """
    if lo >= hi or docs[lo] >= d:
        return lo
    step = 1
    prev = lo
    cur = lo + 1
    while cur < hi and docs[cur] < d:
        prev = cur
        step *= 2
        cur = lo + step
    if cur > hi:
        cur = hi
    # docs[prev] < d and (cur == hi or docs[cur] >= d)
    a, b = prev + 1, cur
    while a < b:
        m = (a + b) >> 1
        if docs[m] < d:
            a = m + 1
        else:
            b = m
    return a


@_jit
def _bound(t, w, d, max_impact, bm_slot, bm, block_shift):
    """What term t (weight w) can add to doc d: its block maximum where kept, else its maximum."""
    s = bm_slot[t]
    if s >= 0:
        return w * bm[s, d >> block_shift]
    return w * max_impact[t]


@_jit
def _kth_largest(acc, touched, nt, k, scratch):
    """The k-th largest of acc[touched[:nt]] (0 when fewer than k), via a k-slot sorted buffer."""
    m = 0
    for i in range(nt):
        v = acc[touched[i]]
        if m == k:
            if v <= scratch[k - 1]:
                continue
            pos = k - 1
        else:
            pos = m
            m += 1
        while pos > 0 and scratch[pos - 1] < v:
            scratch[pos] = scratch[pos - 1]
            pos -= 1
        scratch[pos] = v
    return scratch[k - 1] if m == k else 0.0


@_jit
def maxscore_batch(
    indptr, docs, impacts, ess_indptr, ess_docs, ess_impacts, ess_floor, ess_is_full, max_impact, bm_slot, bm,
    block_shift,
    id_rank,
    q_indptr, q_terms, q_weights, k, theta_boost, slack, acc, touched, out_docs, out_scores, out_counts,
):  # fmt: skip
    scratch = np.empty(k)
    for r in range(len(q_indptr) - 1):
        lo, hi = q_indptr[r], q_indptr[r + 1]
        nq = hi - lo
        out_counts[r] = 0
        if nq == 0:
            continue
        # query terms by descending upper bound; rem[j] bounds what terms j.. can still add
        ub0 = np.empty(nq)
        for j in range(nq):
            ub0[j] = q_weights[lo + j] * max_impact[q_terms[lo + j]]
        order = np.argsort(-ub0)
        rem = np.zeros(nq + 1)
        for jj in range(nq - 1, -1, -1):
            rem[jj] = rem[jj + 1] + ub0[order[jj]]

        # 1. "OR" phase: accumulate heavy terms while the rest could still lift a new document
        #    to theta, the k-th best partial score (a lower bound of the k-th best score).
        nt = 0
        theta = 0.0
        max_acc = 0.0
        missed = 0.0  # pruned lists: what a nominated document may lack from the lists read
        j = 0
        while j < nq:
            t, w = q_terms[lo + order[j]], q_weights[lo + order[j]]
            # past the point where theta rules unseen documents out, a list still gets
            # accumulated when reading it costs less than probing it for each seen document
            if rem[j] < theta * theta_boost and ess_indptr[t + 1] - ess_indptr[t] > 2 * nt:
                break
            for p in range(ess_indptr[t], ess_indptr[t + 1]):
                d = ess_docs[p]
                if acc[d] == 0.0:
                    touched[nt] = d
                    nt += 1
                v = acc[d] + w * ess_impacts[p]
                acc[d] = v
                if v > max_acc:
                    max_acc = v
            missed += w * ess_floor[t]
            j += 1
            if rem[j] < max_acc:  # only then can theta end the phase: worth computing
                theta = max(theta, _kth_largest(acc, touched, nt, k, scratch) * (1.0 - slack))

        # 2. "AND" phase: only documents already seen can make the top k; complete them from
        #    the remaining terms (all terms when the lists were statically pruned).
        first = j if ess_is_full else 0
        prune = theta * theta_boost
        nc = 0
        for i in range(nt):
            d = touched[i]
            if acc[d] + missed + rem[j] >= prune:
                touched[nc] = d
                nc += 1
            else:
                acc[d] = 0.0
        cand = np.sort(touched[:nc])
        score = np.empty(nc)
        rest = np.zeros(nc)  # per document: what the remaining terms can add (block maxima)
        alive = np.ones(nc, dtype=np.bool_)
        for i in range(nc):
            d = cand[i]
            score[i] = acc[d] if ess_is_full else 0.0
            acc[d] = 0.0
            for jj in range(first, nq):
                rest[i] += _bound(
                    q_terms[lo + order[jj]],
                    q_weights[lo + order[jj]],
                    d,
                    max_impact,
                    bm_slot,
                    bm,
                    block_shift,
                )
            if ess_is_full and score[i] + rest[i] < prune:
                alive[i] = False
        for jj in range(first, nq):
            t, w = q_terms[lo + order[jj]], q_weights[lo + order[jj]]
            cur, end = indptr[t], indptr[t + 1]
            prune = theta * theta_boost
            for i in range(nc):
                if not alive[i]:
                    continue
                d = cand[i]
                rest[i] -= _bound(t, w, d, max_impact, bm_slot, bm, block_shift)
                cur = _advance(docs, cur, end, d)
                if cur < end and docs[cur] == d:
                    score[i] += w * impacts[cur]
                if score[i] + rest[i] < prune:
                    alive[i] = False
            # completed-so-far scores are lower bounds too: raise theta before the next list
            m = 0
            for i in range(nc):
                if alive[i]:
                    touched[m] = i
                    m += 1
            theta = max(theta, _kth_largest(score, touched, m, k, scratch) * (1.0 - slack))
        count = 0
        for i in range(nc):
            if alive[i] and score[i] > 0.0 and score[i] >= theta:
                count = _offer(r, cand[i], score[i], k, id_rank, out_docs, out_scores, count)
        out_counts[r] = count

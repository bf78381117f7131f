"""PLAID search stages (Santhanam et al., PLAID, 2022) over a :class:`~cascade.retrieval.late.plaid.PLAIDIndex`.

For a batch of queries:

1. candidate generation: the documents listed under each query token's top ``ncells``
   centroids;
2. centroid interaction with pruning: approximate MaxSim over each candidate's bag of
   centroids, ignoring centroids whose best query-token score is below
   ``centroid_score_threshold``; keep the best ``ndocs``;
3. centroid interaction without pruning on those; keep ``ndocs / 4``;
4. decompress those documents' token vectors and rank them by exact MaxSim.

Two engines give the same results. :class:`TorchSearcher` runs every step as tensor
operations over all (query, document) pairs of a batch, on any torch device: everything
stays on the device, bags are pre-padded once so no step waits on the host per chunk, and
the host syncs a few times per batch, not per query (a GPU wants big batches).
:func:`search_numba` runs the compiled per-query kernel of :mod:`cascade.retrieval.late.plaid_kernel`
(the CPU default when numba is installed).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.retrieval.errors import require

from .maxsim import as_tensor, maxsim_pairs

if TYPE_CHECKING:
    from .plaid import PLAIDIndex

_NEG = float("-inf")
_PRUNED = -1.0e4  # pads and pruned centroids (PLAID's -9999): finite, a fully pruned doc ranks last


@dataclass(frozen=True)
class SearchParams:
    """PLAID's knobs. :meth:`for_k` gives PLAID's defaults; :meth:`exhaustive` scores every
    document (then search equals exact MaxSim over the decompressed vectors)."""

    ncells: int
    centroid_score_threshold: float
    ndocs: int

    @classmethod
    def for_k(cls, k: int) -> SearchParams:
        if k <= 10:
            return cls(1, 0.5, 256)
        if k <= 100:
            return cls(2, 0.45, 1024)
        return cls(4, 0.4, max(4 * k, 4096))

    @classmethod
    def exhaustive(cls) -> SearchParams:
        return cls(1 << 30, _NEG, 1 << 40)


#: The high-recall setting: more cells per query token, a lower centroid score threshold and
#: more candidates than PLAID's defaults for k <= 100, trading speed for recall. With an index built with ``store_vectors=True`` the last stage ranks by exact MaxSim;
#: without stored vectors, recall is capped by the residual compression (see the README).
HIGH_RECALL = SearchParams(ncells=4, centroid_score_threshold=0.4, ndocs=2048)


def ragged_positions(indptr, rows):
    """Positions ``indptr[r]:indptr[r + 1]`` for each r in ``rows``, concatenated (torch).

    Returns (positions, owner) where owner[i] is the index in ``rows`` it came from.
    """
    torch = require("torch", "models")
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lens)
    first = torch.cumsum(lens, 0) - lens
    pos = torch.arange(len(owner), device=rows.device) - first[owner] + starts[owner]
    return pos, owner


def topk_per_group(group, scores, n: int, num_groups: int):
    """Indices (into ``scores``) of the best ``n`` per group; ``group`` is sorted ascending.

    Ties go to the earlier entry (a stable sort, not topk, whose tie order is unspecified),
    as in the compiled kernel: documents with the same bag of centroids tie exactly.
    """
    torch = require("torch", "models")
    if len(group) == 0:
        return group
    counts = torch.bincount(group, minlength=num_groups)
    width = int(counts.max())
    if width <= n:  # every group fits: keep all (finite) entries
        return torch.nonzero(scores > _NEG).flatten()
    first = torch.cumsum(counts, 0) - counts
    col = torch.arange(len(group), device=group.device) - first[group]
    padded = torch.full((num_groups, width), _NEG, device=scores.device)
    padded[group, col] = scores
    top = torch.sort(padded, dim=1, descending=True, stable=True)
    sel = (first[:, None] + top.indices[:, :n])[top.values[:, :n] > _NEG]
    return torch.sort(sel).values


class TorchSearcher:
    """The index's arrays as tensors on one device, and the batched PLAID stages over them.

    Args:
        index: the index (its arrays are copied to ``device`` once).
        budget: elements per intermediate tensor (bounds memory; chunks are sized from it
            on the host, so chunking costs no device sync).
    """

    def __init__(self, index: PLAIDIndex, device, budget: int = 1 << 26):
        torch = require("torch", "models")
        self.device, self.budget = device, budget
        self.kc, self.num_docs, self.dim = len(index.centroids), index.num_docs, index.dim
        self.codec = index.codec

        def t(a, dtype=None):
            return as_tensor(a, device, dtype)

        self.centroids = t(index.centroids, torch.float32)
        self.codes = t(np.asarray(index.codes, np.int64))
        self.residuals = t(index.residuals)
        self.doc_offsets = t(np.asarray(index.doc_offsets, np.int64))
        self.ivf_indptr = t(np.asarray(index.postings["ivf_indptr"], np.int64))
        self.ivf_pids = t(index.postings["ivf_pids"], torch.long)
        self.table = torch.as_tensor(index.codec.lookup_table(), device=device)
        self.vectors = t(index.vectors) if index.vectors is not None else None
        lens = np.diff(np.asarray(index.doc_offsets))
        self.max_doc_len = int(lens.max()) if len(lens) else 0
        # bags padded once to (num docs, widest bag); pads point at row kc of the score table
        bag_off = np.asarray(index.postings["bag_offsets"], np.int64)
        codes = np.asarray(index.postings["bag_codes"], np.int64)
        bag_lens = np.diff(bag_off)
        col = np.arange(max(1, int(bag_lens.max()) if len(bag_lens) else 1))
        idx = np.minimum(bag_off[:-1, None] + col, max(len(codes) - 1, 0))
        padded = np.where(col < bag_lens[:, None], codes[idx] if len(codes) else 0, self.kc)
        self.bags = t(padded.astype(np.int32))  # int32 on the device; widened per chunk

    def search(self, q, qm, k: int, p: SearchParams):
        """One batch: q (B, Lq, dim) float, qm (B, Lq) bool, on this device -> (B, k) scores, indices."""
        torch = require("torch", "models")
        dev, kc, nd = self.device, self.kc, self.num_docs
        nq, lq = qm.shape
        scores = torch.einsum("bid,kd->bki", q, self.centroids)  # (B, K, Lq): centroid-major
        # 1. candidates: documents under each query token's top ncells centroids
        tok_q = torch.nonzero(qm)[:, 0]
        top_cells = torch.topk(scores.transpose(1, 2)[qm], min(p.ncells, kc), dim=1).indices
        qc = torch.unique(tok_q[:, None] * kc + top_cells)
        pos, owner = ragged_positions(self.ivf_indptr, qc % kc)
        pair = torch.unique((qc // kc)[owner] * nd + self.ivf_pids[pos])
        cand_q, cand_d = pair // nd, pair % nd
        # score table: one row per (query, centroid) plus a pad row per query; pad tokens score 0
        scores = scores.masked_fill(~qm[:, None, :], 0.0)
        best = scores.masked_fill(~qm[:, None, :], _NEG).amax(dim=2)  # (B, K)
        pad = torch.full((nq, 1, lq), _PRUNED, device=dev)
        full = torch.cat([scores, pad], dim=1)
        pruned = torch.cat([scores.masked_fill((best < p.centroid_score_threshold)[:, :, None], _PRUNED), pad], dim=1)
        # 2. approximate scores over pruned bags, best ndocs; 3. over full bags, best ndocs / 4
        # (each stage only runs when some query has more candidates than it keeps)
        for table, n in ((pruned, p.ndocs), (full, max(p.ndocs // 4, k))):
            if len(cand_q) and int(torch.bincount(cand_q).max()) > n:
                approx = self._bag_scores(table.reshape(nq * (kc + 1), lq), cand_q, cand_d)
                sel = topk_per_group(cand_q, approx, n, nq)
                cand_q, cand_d = cand_q[sel], cand_d[sel]
        # 4. exact MaxSim over decompressed (or stored) vectors
        exact = self._exact_scores(q, qm, cand_q, cand_d)
        sel = topk_per_group(cand_q, exact, k, nq)
        return _to_rows(cand_q[sel], cand_d[sel], exact[sel], nq, k)

    def _bag_scores(self, table, cand_q, cand_d):
        torch = require("torch", "models")
        out = torch.empty(len(cand_q), device=table.device)
        step = max(1, self.budget // (self.bags.shape[1] * table.shape[1]))
        for s in range(0, len(cand_q), step):
            rows = cand_q[s : s + step, None] * (self.kc + 1) + self.bags[cand_d[s : s + step]].long()
            out[s : s + step] = table[rows].amax(dim=1).sum(dim=1)
        return out

    def _exact_scores(self, q, qm, cand_q, cand_d):
        torch = require("torch", "models")
        out = torch.empty(len(cand_q), device=q.device)
        width = max(1, self.max_doc_len)
        step = max(1, self.budget // (width * max(self.dim, q.shape[1])))
        col = torch.arange(width, device=q.device)
        for s in range(0, len(cand_q), step):
            qs, ds = cand_q[s : s + step], cand_d[s : s + step]
            starts = self.doc_offsets[ds]
            mask = col[None, :] < (self.doc_offsets[ds + 1] - starts)[:, None]
            emb = torch.where(mask, starts[:, None] + col, 0).flatten()
            if self.vectors is not None:
                vecs = self.vectors[emb].float()
            else:
                vecs = self.codec.decompress(self.centroids, self.codes[emb], self.residuals[emb], self.table)
            out[s : s + step] = maxsim_pairs(q[qs], qm[qs], vecs.view(len(ds), width, -1), mask)
        return out


def _to_rows(cand_q, cand_d, scores, nq: int, k: int):
    """(query, doc, score) triples, at most k per query -> (nq, k) scores desc and doc indices."""
    torch = require("torch", "models")
    dev = scores.device
    out_s = torch.full((nq, k), _NEG, device=dev)
    out_i = torch.full((nq, k), -1, dtype=torch.long, device=dev)
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(cand_q[order], stable=True).indices]  # by query, then score desc
    cand_q, cand_d, scores = cand_q[order], cand_d[order], scores[order]
    counts = torch.bincount(cand_q, minlength=nq)
    col = torch.arange(len(cand_q), device=dev) - (torch.cumsum(counts, 0) - counts)[cand_q]
    out_s[cand_q, col], out_i[cand_q, col] = scores, cand_d
    return out_s, out_i


def numba_arrays(index: PLAIDIndex) -> dict[str, Any]:
    """The index's arrays as the compiled kernel takes them (plain, contiguous ndarrays)."""
    p = index.postings
    a = {
        "centroids": np.ascontiguousarray(index.centroids, np.float32),
        "codes": np.asarray(index.codes), "residuals": np.asarray(index.residuals),
        "doc_offsets": np.asarray(index.doc_offsets, np.int64),
        "ivf_indptr": np.asarray(p["ivf_indptr"], np.int64), "ivf_pids": np.asarray(p["ivf_pids"]),
        "bag_offsets": np.asarray(p["bag_offsets"], np.int64), "bag_codes": np.asarray(p["bag_codes"]),
        "table": index.codec.lookup_table().astype(np.float32),
        "vectors": None if index.vectors is None else np.asarray(index.vectors),
    }  # fmt: skip
    if a["vectors"] is None:
        from .plaid_kernel import inverse_norms

        a["inv_norms"] = inverse_norms(a["codes"], a["residuals"], a["centroids"], a["table"])
    return a


def search_numba(
    a: dict[str, Any], rows: list[np.ndarray], k: int, p: SearchParams, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """PLAID over a batch of queries with the compiled kernel.

    Args:
        a: :func:`numba_arrays` of the index.
        rows: each query's (Lq, dim) float32 token vectors.
        threads: queries are split over this many threads (the kernels release the GIL).

    Returns:
        (scores, doc indices), both (len(rows), k); missing hits are -inf / -1.
    """
    out_s = np.full((len(rows), k), _NEG, np.float32)
    out_i = np.full((len(rows), k), -1, np.int64)
    if not rows:
        return out_s, out_i
    ends = np.cumsum([len(q) for q in rows])
    batch_scores = np.concatenate(rows) @ a["centroids"].T  # (batch tokens, K): one BLAS call

    def part(lo: int, hi: int) -> None:
        stamp = np.zeros(len(a["doc_offsets"]) - 1, np.int64)  # per thread: a scratch it writes
        for r in range(lo, hi):
            _one_query(a, rows[r], batch_scores[ends[r] - len(rows[r]) : ends[r]], k, p, stamp, r + 1, out_s[r], out_i[r])

    cuts = np.linspace(0, len(rows), min(threads, len(rows)) + 1).astype(int)
    if len(cuts) <= 2:
        part(0, len(rows))
    else:
        with ThreadPoolExecutor(len(cuts) - 1) as pool:
            list(pool.map(part, cuts[:-1], cuts[1:]))
    return out_s, out_i


def _one_query(a, q, token_scores, k, p, stamp, stamp_value, out_s, out_i) -> None:
    from .plaid_kernel import candidates, exact_scores, gather_docs

    if not len(q):
        return
    scores = np.ascontiguousarray(token_scores.T)  # (K, Lq): centroid-major for the kernel
    docs = candidates(
        scores, min(p.ncells, 1 << 40), p.centroid_score_threshold, p.ndocs, k,
        a["ivf_indptr"], a["ivf_pids"], a["bag_offsets"], a["bag_codes"], stamp, stamp_value,
    )  # fmt: skip
    if not len(docs):
        return
    if a["vectors"] is not None:
        vecs, starts = gather_docs(docs, a["doc_offsets"], a["vectors"])
        exact = np.maximum.reduceat(vecs @ q.T, starts[:-1], axis=0).sum(axis=1)
    else:
        exact = exact_scores(docs, scores, q, a["doc_offsets"], a["codes"], a["residuals"], a["table"], a["inv_norms"])
    top = np.argsort(-exact, kind="stable")[:k]
    out_s[: len(top)], out_i[: len(top)] = exact[top], docs[top]

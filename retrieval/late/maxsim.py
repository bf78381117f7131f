"""Exhaustive late-interaction scoring (MaxSim) over uncompressed token vectors.

``score(q, d) = sum over query tokens of the max over document tokens of q_i . d_j``.

:class:`MaxSim` scores every document of a corpus (the reference the PLAID engine is tested
and benchmarked against) or a given candidate list; :class:`ColBERTReranker` encodes the
candidates' text on the fly and reranks them, as a reranker stage.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from cascade.retrieval.encoders.colbert import MultiVectors
from cascade.retrieval.errors import IndexMismatch, InvalidInput, require
from cascade.retrieval.models import resolve_device


def as_tensor(a, device, dtype=None):
    """A numpy array (memory-mapped, read-only too) as a torch tensor on ``device``, no extra copy on CPU."""
    torch = require("torch", "models")
    with warnings.catch_warnings():  # read-only memory maps: we never write through the tensor
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(np.asarray(a))
    return x.to(device, dtype) if dtype is not None else x.to(device)


def maxsim_padded(q, q_mask, d, d_mask, low_precision: bool = False):
    """MaxSim of every query against every document, all padded, in torch.

    Args:
        q: (B, Lq, dim) queries; q_mask: (B, Lq) bool, real tokens.
        d: (N, Ld, dim) documents; d_mask: (N, Ld) bool.
        low_precision: run the GEMM and the max in the inputs' dtype (fp16/bf16 on a GPU:
            tensor cores, fp32 accumulation inside the GEMM), summing the maxima in fp32;
            default: everything in fp32.

    Returns:
        (B, N) float32 scores; a document with no token scores -inf.
    """
    torch = require("torch", "models")
    b, lq, dim = q.shape
    n, ld, _ = d.shape
    if ld == 0:  # only empty documents
        return torch.full((b, n), float("-inf"), device=q.device)
    # one GEMM over flat tokens, then an in-place -inf bias on padding and one max: no 4-D copies
    qf, df = q.reshape(b * lq, dim), d.reshape(n * ld, dim)
    s = (qf @ df.T if low_precision else qf.float() @ df.float().T).view(b * lq, n, ld)
    s += torch.zeros((n, ld), device=s.device, dtype=s.dtype).masked_fill_(~d_mask, float("-inf"))
    s = s.amax(dim=-1).float().view(b, lq, n)
    return s.masked_fill_(~q_mask[:, :, None], 0.0).sum(dim=1)


def maxsim_pairs(q, q_mask, d, d_mask):
    """MaxSim of aligned pairs: query ``p`` against document ``p``; shapes (P, L, dim)."""
    torch = require("torch", "models")
    s = torch.bmm(d.float(), q.float().transpose(1, 2))  # (P, Ld, Lq)
    s = s.masked_fill(~d_mask[:, :, None], float("-inf")).amax(dim=1)
    return s.masked_fill(~q_mask, 0.0).sum(dim=-1)


def pad_rows(vectors, offsets, rows):
    """Gather ragged rows ``rows`` of a flat (T, dim) torch tensor into (n, Lmax, dim) + mask."""
    torch = require("torch", "models")
    starts, lens = offsets[rows], offsets[rows + 1] - offsets[rows]
    width = int(lens.max()) if len(lens) else 0
    pos = torch.arange(width, device=vectors.device)
    mask = pos[None, :] < lens[:, None]
    idx = torch.where(mask, starts[:, None] + pos[None, :], 0)
    return vectors[idx], mask


class MaxSim:
    """Exhaustive MaxSim over a corpus of uncompressed token vectors.

    Args:
        vectors: the documents' token vectors (float16 or float32; may be memory-mapped).
        device: torch device for scoring.
        chunk_tokens: document tokens scored per step (bounds memory).
        gemm_dtype: ``fp16`` or ``bf16``: on a GPU, score with tensor-core GEMMs in that
            dtype (:func:`maxsim_padded` ``low_precision``); default: fp32 scoring.
    """

    def __init__(self, vectors: MultiVectors, device: str | None = None, chunk_tokens: int = 1 << 16,
                 gemm_dtype: str | None = None):  # fmt: skip
        torch = require("torch", "models")
        self.device = resolve_device(device)
        if gemm_dtype not in (None, "fp16", "bf16"):
            raise InvalidInput(f"gemm_dtype must be fp16, bf16 or None, got {gemm_dtype!r}")
        if gemm_dtype is not None and self.device.type != "cuda":
            raise InvalidInput("gemm_dtype (tensor-core scoring) needs a CUDA device")
        self.low_precision = gemm_dtype is not None
        dtype = torch.bfloat16 if gemm_dtype == "bf16" else torch.float16 if self.device.type == "cuda" else torch.float32
        self.vectors = as_tensor(vectors.vectors, self.device, dtype)
        self.offsets = as_tensor(np.asarray(vectors.offsets, dtype=np.int64), self.device)
        self.dim = int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0
        self.chunk_tokens = chunk_tokens

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _queries(self, queries: MultiVectors):
        torch = require("torch", "models")
        if queries.vectors.shape[1] != self.dim:
            raise IndexMismatch(f"query vectors have dim {queries.vectors.shape[1]}, documents {self.dim}")
        q, m = queries.padded()
        return torch.as_tensor(q).to(self.device, self.vectors.dtype), torch.as_tensor(m).to(self.device)

    def scores(self, queries: MultiVectors, budget: int = 1 << 25):
        """(num queries, num docs) float32 torch tensor of MaxSim scores (-inf: empty doc).

        Work is cut into (query batch x document chunk) blocks of about ``budget`` scores.
        """
        torch = require("torch", "models")
        q, qm = self._queries(queries)
        n = len(self)
        out = torch.empty((len(q), n), dtype=torch.float32, device=self.device)
        lens = self.offsets[1:] - self.offsets[:-1]
        width = max(1, int(lens.max()) if n else 1)
        per = max(1, self.chunk_tokens // width)
        qb = max(1, budget // (per * width * max(1, q.shape[1])))
        for s in range(0, n, per):
            rows = torch.arange(s, min(n, s + per), device=self.device)
            d, dm = pad_rows(self.vectors, self.offsets, rows)
            for b in range(0, len(q), qb):
                out[b : b + qb, s : s + per] = maxsim_padded(q[b : b + qb], qm[b : b + qb], d, dm, self.low_precision)
        return out

    def search(self, queries: MultiVectors, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` per query: (scores, doc indices), each (num queries, k').

        Empty documents are never returned; ``k'`` = min(k, num docs).
        """
        torch = require("torch", "models")
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        s = self.scores(queries)
        top = torch.topk(s, min(k, s.shape[1]), dim=1)
        return top.values.cpu().numpy(), top.indices.cpu().numpy()

    def score_candidates(self, query: MultiVectors, doc_indices: Sequence[int]) -> np.ndarray:
        """MaxSim of one query (``query[0]``) against the listed documents only (reranking)."""
        torch = require("torch", "models")
        q, qm = self._queries(query)
        rows = torch.as_tensor(np.asarray(doc_indices, dtype=np.int64), device=self.device)
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= len(self)):
            raise InvalidInput(f"candidate document index out of range 0..{len(self) - 1}")
        d, dm = pad_rows(self.vectors, self.offsets, rows)
        return maxsim_padded(q[:1], qm[:1], d, dm)[0].cpu().numpy()

"""Spherical k-means in plain torch (CPU or GPU), deterministic for a given seed.

Used to pick a late-interaction index's centroids. Token vectors are L2-normalized, so
points go to the centroid of largest inner product and centroids are re-normalized after
each update, as ColBERTv2 does with the centroids faiss returns.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.progress import progress

log = logging.getLogger(__name__)


def default_num_centroids(num_embeddings: int) -> int:
    """ColBERTv2's rule: 2 ** floor(log2(16 * sqrt(#embeddings)))."""
    return 2 ** int(math.floor(math.log2(16 * math.sqrt(max(num_embeddings, 1)))))


def _exact(block, ct):
    s = block @ ct
    return s.max(dim=1)


def assign(x, centroids, chunk: int = 8192, nprobe: int = 16, two_level_from: int = 4096):
    """Index of the nearest (largest inner product) centroid of each row of ``x``.

    With many centroids (``>= two_level_from``) the search is two-level, as an IVF index
    does: the centroids are grouped by a small k-means (about sqrt(k) groups), each row is
    compared with the centroids of its ``nprobe`` best groups only. That costs about
    ``nprobe / sqrt(k)`` of the exact search. A row whose nearest centroid lies outside its
    probed groups still gets a near centroid, whose residual the compression then carries.

    Args:
        x: (n, dim) torch tensor or numpy array (computed in fp32 on ``centroids``' device,
            ``chunk`` rows at a time to bound memory).
        centroids: (k, dim) torch tensor.

    Returns:
        (n,) int64 torch tensor on ``centroids``' device.
    """
    torch = require("torch", "models")
    dev = centroids.device
    cents = centroids.float()
    k = len(cents)
    out = torch.empty(len(x), dtype=torch.long, device=dev)
    groups = None
    if k >= two_level_from:
        coarse = kmeans(cents, int(math.sqrt(k)), iters=3, seed=0, device=str(dev), two_level_from=1 << 62)
        member = assign(cents, coarse, two_level_from=1 << 62)
        order = torch.argsort(member)
        ptr = torch.zeros(len(coarse) + 1, dtype=torch.long, device=dev)
        ptr[1:] = torch.cumsum(torch.bincount(member, minlength=len(coarse)), 0)
        groups = (coarse.T.contiguous(), order, ptr.tolist())
    ct = cents.T.contiguous()
    step = chunk if groups is None else chunk * 8
    for s in range(0, len(x), step):
        block = x[s : s + step]
        block = torch.as_tensor(np.asarray(block) if isinstance(block, np.ndarray) else block)
        block = block.to(dev, torch.float32)
        if groups is None:
            out[s : s + len(block)] = _exact(block, ct).indices
        else:
            out[s : s + len(block)] = _two_level(block, cents, *groups, nprobe)
    return out


def _two_level(block, cents, coarse_t, order, ptr, nprobe):
    """Nearest centroid among those of each row's ``nprobe`` best groups (one GEMM per group)."""
    torch = require("torch", "models")
    n = len(block)
    probe = (block @ coarse_t).topk(min(nprobe, coarse_t.shape[1]), dim=1).indices.flatten()
    rows = torch.arange(n, device=block.device).repeat_interleave(probe.numel() // n)
    by_group = torch.argsort(probe, stable=True)
    rows, counts = rows[by_group], torch.bincount(probe, minlength=coarse_t.shape[1]).tolist()
    best = torch.full((n,), float("-inf"), device=block.device)
    arg = torch.zeros(n, dtype=torch.long, device=block.device)
    start = 0
    for g, c in enumerate(counts):
        if c == 0 or ptr[g] == ptr[g + 1]:
            start += c
            continue
        r = rows[start : start + c]
        start += c
        members = order[ptr[g] : ptr[g + 1]]
        top = _exact(block[r], cents[members].T)
        better = top.values > best[r]
        best[r[better]] = top.values[better]
        arg[r[better]] = members[top.indices[better]]
    return arg


def kmeans(
    x: np.ndarray,
    k: int,
    iters: int = 4,
    seed: int = 0,
    device: str | None = None,
    show_progress: bool = False,
    two_level_from: int = 4096,
    nprobe: int = 16,
):
    """Spherical k-means on the rows of ``x``.

    Args:
        x: (n, dim) sample of unit vectors (numpy, any float dtype), n >= k.
        k: number of centroids.
        iters: Lloyd iterations after the seeded random initialization.
        seed: fixes the initialization; the same seed and data give the same centroids.
        device: torch device for the computation.
        two_level_from: from this many centroids on, assignments are two-level (see :func:`assign`).

    Returns:
        (k, dim) float32 torch tensor of unit-norm centroids.

    Raises:
        InvalidInput: fewer points than centroids.
    """
    torch = require("torch", "models")
    from cascade.retrieval.models import resolve_device

    dev = resolve_device(device)
    n = len(x)
    if not 0 < k <= n:
        raise InvalidInput(f"k-means needs 1 <= k <= #points, got k={k} for {n} points")
    gen = torch.Generator().manual_seed(seed)
    points = (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))).float().to(dev)
    centroids = points[torch.randperm(n, generator=gen)[:k].to(dev)].clone()
    for _ in progress(range(iters), "k-means", unit="iter", enabled=show_progress):
        labels = assign(points, centroids, nprobe=nprobe, two_level_from=two_level_from)
        sums = torch.zeros_like(centroids).index_add_(0, labels, points)
        counts = torch.bincount(labels, minlength=k)
        empty = counts == 0
        if empty.any():
            # re-seed empty clusters with random points so every centroid stays useful
            refill = torch.randint(0, n, (int(empty.sum()),), generator=gen).to(dev)
            sums[empty] = points[refill]
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids

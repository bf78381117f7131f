"""Spherical k-means in plain torch (CPU or GPU), deterministic for a given seed.

Used to pick a late-interaction index's centroids. Token vectors are L2-normalized, so
points go to the centroid of largest inner product and centroids are re-normalized after
each update, as ColBERTv2 does with the centroids faiss returns.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from tqdm.auto import tqdm

from retrieval.errors import InvalidInput, require

log = logging.getLogger(__name__)


def default_num_centroids(num_embeddings: int) -> int:
    """ColBERTv2's rule: 2 ** floor(log2(16 * sqrt(#embeddings)))."""
    return 2 ** int(math.floor(math.log2(16 * math.sqrt(max(num_embeddings, 1)))))


def assign(x, centroids, chunk: int = 8192):
    """Index of the nearest (largest inner product) centroid of each row of ``x``.

    Args:
        x: (n, dim) torch tensor or numpy array (any float dtype; computed in fp32 on
            ``centroids``' device, ``chunk`` rows at a time to bound memory).
        centroids: (k, dim) torch tensor.

    Returns:
        (n,) int64 torch tensor on ``centroids``' device.
    """
    torch = require("torch", "models")
    out = torch.empty(len(x), dtype=torch.long, device=centroids.device)
    ct = centroids.float().T.contiguous()
    for s in range(0, len(x), chunk):
        block = torch.as_tensor(np.asarray(x[s : s + chunk]) if isinstance(x, np.ndarray) else x[s : s + chunk])
        out[s : s + chunk] = (block.to(centroids.device, torch.float32) @ ct).argmax(dim=1)
    return out


def kmeans(
    x: np.ndarray,
    k: int,
    iters: int = 4,
    seed: int = 0,
    device: str | None = None,
    show_progress: bool = False,
):
    """Spherical k-means on the rows of ``x``.

    Args:
        x: (n, dim) sample of unit vectors (numpy, any float dtype), n >= k.
        k: number of centroids.
        iters: Lloyd iterations after the seeded random initialization.
        seed: fixes the initialization; the same seed and data give the same centroids.
        device: torch device for the computation.

    Returns:
        (k, dim) float32 torch tensor of unit-norm centroids.

    Raises:
        InvalidInput: fewer points than centroids.
    """
    torch = require("torch", "models")
    from retrieval.models import resolve_device

    dev = resolve_device(device)
    n = len(x)
    if not 0 < k <= n:
        raise InvalidInput(f"k-means needs 1 <= k <= #points, got k={k} for {n} points")
    gen = torch.Generator().manual_seed(seed)
    points = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(dev)
    centroids = points[torch.randperm(n, generator=gen)[:k].to(dev)].clone()
    for _ in tqdm(range(iters), desc="k-means", unit="iter", disable=not show_progress):
        labels = assign(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, points)
        counts = torch.bincount(labels, minlength=k)
        empty = counts == 0
        if empty.any():
            # re-seed empty clusters with random points so every centroid stays useful
            refill = torch.randint(0, n, (int(empty.sum()),), generator=gen).to(dev)
            sums[empty] = points[refill]
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids

"""ColBERTv2 residual compression: a centroid id plus an ``nbits``-per-dimension residual.

A token vector ``v`` is stored as its nearest centroid ``c`` and the residual ``v - c``
quantized per dimension into ``2 ** nbits`` buckets, shared by all dimensions. ColBERTv2
puts the cutoffs at equal-count quantiles of a sample of residual values and decodes each
bucket to the quantile at its middle; here that is only the start of a Lloyd-Max fit (1-D
k-means on the sample values: cutoffs halfway between weights, weights the mean of their
bucket), which minimizes the squared error for the same bits and the same format, so
decompressed vectors sit closer to the originals and MaxSim over them ranks closer to
exact. (Buckets are shared rather than per dimension: after a random rotation every
dimension's residual has the same spread.)

Decoding is one table lookup per packed byte (``8 / nbits`` dimensions per byte) plus the
centroid, then an L2 normalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cascade.retrieval.errors import InvalidInput, require

NBITS = (1, 2, 4)


@dataclass(frozen=True)
class ResidualCodec:
    """Bucket cutoffs and weights for one index; centroids are held by the index."""

    nbits: int
    cutoffs: np.ndarray  # (2**nbits - 1,) float32, ascending
    weights: np.ndarray  # (2**nbits,) float32, the decoded value of each bucket

    @classmethod
    def fit(cls, residuals: np.ndarray, nbits: int, iters: int = 100) -> ResidualCodec:
        """Lloyd-Max buckets for the residual values, started from ColBERTv2's quantiles.

        Args:
            residuals: a sample of residuals (any shape; every value counts alike).
            nbits: bits per dimension.
            iters: Lloyd iterations (0 gives ColBERTv2's quantile buckets).

        Raises:
            InvalidInput: ``nbits`` not in 1, 2, 4.
        """
        if nbits not in NBITS:
            raise InvalidInput(f"nbits must be one of {NBITS}, got {nbits}")
        values = np.sort(np.asarray(residuals, dtype=np.float32).ravel())
        n = 2**nbits
        cutoffs = np.quantile(values, np.arange(1, n) / n)
        weights = np.quantile(values, (np.arange(n) + 0.5) / n)
        sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
        for _ in range(iters):
            ends = np.concatenate([[0], np.searchsorted(values, cutoffs), [len(values)]])
            counts = ends[1:] - ends[:-1]
            # an empty bucket keeps its weight (cannot happen from quantiles on spread data)
            weights = np.where(counts > 0, (sums[ends[1:]] - sums[ends[:-1]]) / np.maximum(counts, 1), weights)
            cutoffs = (weights[1:] + weights[:-1]) / 2
        return cls(nbits, cutoffs.astype(np.float32), weights.astype(np.float32))

    @property
    def per_byte(self) -> int:
        return 8 // self.nbits

    def packed_width(self, dim: int) -> int:
        if dim % self.per_byte:
            raise InvalidInput(f"dim {dim} is not a multiple of {self.per_byte} (needed for nbits={self.nbits})")
        return dim // self.per_byte

    def compress(self, residuals):
        """(n, dim) float residuals -> (n, dim * nbits / 8) uint8, first dim in the high bits.

        Takes and returns torch tensors (any device) or numpy arrays, whichever it is given.
        """
        torch = require("torch", "models")
        as_numpy = isinstance(residuals, np.ndarray)
        r = torch.as_tensor(residuals).float()
        n, dim = r.shape
        width = self.packed_width(dim)
        buckets = torch.bucketize(r, torch.as_tensor(self.cutoffs, device=r.device), right=True)
        shifts = torch.arange(self.per_byte - 1, -1, -1, device=r.device) * self.nbits
        packed = (buckets.reshape(n, width, self.per_byte) << shifts).sum(dim=2).to(torch.uint8)
        return packed.numpy() if as_numpy else packed

    def lookup_table(self) -> np.ndarray:
        """(256, 8 / nbits) float32: the decoded residual values packed in each byte value."""
        byte = np.arange(256, dtype=np.uint8)[:, None]
        shifts = (np.arange(self.per_byte - 1, -1, -1) * self.nbits).astype(np.uint8)
        return self.weights[(byte >> shifts) & (2**self.nbits - 1)]

    def decompress(self, centroids, codes, packed, table=None):
        """Unit vectors ``normalize(centroids[codes] + residual)``, in torch.

        Args:
            centroids: (k, dim) float torch tensor.
            codes: (n,) long tensor of centroid ids (same device).
            packed: (n, width) uint8 tensor from :meth:`compress`.
            table: :meth:`lookup_table` as a tensor on the device (built if None).
        """
        torch = require("torch", "models")
        if table is None:
            table = torch.as_tensor(self.lookup_table(), device=centroids.device)
        n = len(codes)
        res = table[packed.long()].reshape(n, -1)
        return torch.nn.functional.normalize(centroids[codes].float() + res, dim=-1)

"""Exact maximum-inner-product search over an embedding matrix, on the best engine present.

- faiss-gpu (``GpuIndexFlatIP``) when the search device is a GPU and faiss has GPU support;
- plain torch on the GPU otherwise (matrix product and ``torch.topk`` per query batch);
- CPU faiss (``IndexFlatIP``, BLAS) on the CPU.

Each returns ``search(queries [n, d] float32, k) -> (scores [n, k], indices [n, k])``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from cascade.retrieval.errors import require

log = logging.getLogger(__name__)

Searcher = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def exact_searcher(embeddings: np.ndarray, device: str | None = None) -> Searcher:
    """Pick the engine for ``device`` (``None``/``"auto"``: a GPU when there is one).

    faiss is needed on the CPU only: a GPU without faiss-gpu searches through torch.
    """
    dev = _device(device)
    if dev is not None and dev.type == "cuda":
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            log.info("exact search on faiss-gpu")
            cpu = faiss.IndexFlatIP(embeddings.shape[1])
            cpu.add(np.ascontiguousarray(embeddings, dtype=np.float32))
            gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), dev.index or 0, cpu)
            return gpu.search
        log.info("exact search with torch on %s", dev)
        return torch_searcher(embeddings, dev)
    faiss = require("faiss", "dense")
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index.search


def torch_searcher(embeddings: np.ndarray, device, dtype=None) -> Searcher:
    """Exact top-k with torch: one matrix product per query batch, ``torch.topk`` on the scores."""
    torch = require("torch", "models")
    # a copy: the embeddings are often a read-only memory map, which torch will not wrap
    matrix = torch.from_numpy(np.array(embeddings, dtype=np.float32)).to(device, dtype or torch.float32)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device, matrix.dtype)
            scores, idx = torch.topk(q @ matrix.T, k, dim=1)
            return scores.float().cpu().numpy(), idx.cpu().numpy()

    return search


def _device(device: str | None):
    """The torch device for search, or None when torch is not installed and no GPU was asked for."""
    if device in (None, "auto", "cpu"):
        try:
            import torch
        except ImportError:
            return None
        return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    from cascade.retrieval.models import resolve_device

    return resolve_device(device)

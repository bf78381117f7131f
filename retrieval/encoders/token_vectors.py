"""Offline token-vector encoding of a corpus, cached as plain arrays.

Encoding a corpus into token vectors is the slow step of a late-interaction index (a
transformer forward pass over every document). :func:`encode_corpus` writes the vectors once as a
``token_vectors`` directory (fp16 vectors, offsets, doc ids; through retrieval.storage), and
:func:`load_token_vectors` opens it memory-mapped, so index builds and benchmarks can be
repeated without the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.models import dtype_name
from cascade.retrieval.storage import read_index, write_index
from cascade.retrieval.types import Document

from .colbert import ColBERTEncoder, MultiVectors

log = logging.getLogger(__name__)

KIND = "token_vectors"
FORMAT_VERSION = 1


def encoder_params(encoder: ColBERTEncoder) -> dict:
    """What identifies the vectors an encoder produces (stored with them and in indexes)."""
    return {
        "model": encoder.model_id, "format": encoder.format, "dim": encoder.dim,
        "projection_dim": encoder.projection_dim, "projection_seed": encoder.projection_seed,
        "query_maxlen": encoder.config.query_maxlen, "doc_maxlen": encoder.config.doc_maxlen,
        "encode_dtype": dtype_name(encoder.dtype),
    }  # fmt: skip


def encode_corpus(
    docs: Iterable[Document], encoder: ColBERTEncoder, out_dir: str | Path | None = None
) -> tuple[np.ndarray, MultiVectors]:
    """Encode documents (title + " " + text) into fp16 token vectors.

    Args:
        docs: the corpus.
        encoder: the document encoder.
        out_dir: if given, the vectors are also written there (atomically).

    Returns:
        (doc ids, token vectors in fp16), in corpus order.

    Raises:
        InvalidInput: an empty corpus or duplicate ids.
    """
    docs = list(docs)
    if not docs:
        raise InvalidInput("the corpus is empty: nothing to encode")
    ids = np.array([d.id for d in docs], dtype=str)
    if len(set(ids.tolist())) != len(ids):
        raise InvalidInput("duplicate document ids in the corpus")
    t = time.perf_counter()
    mv = encoder.encode_documents([d.contents for d in docs])
    mv = MultiVectors(mv.vectors.astype(np.float16), mv.offsets)
    elapsed = time.perf_counter() - t
    log.info("encoded %d docs, %d token vectors in %.1f s", len(docs), len(mv.vectors), elapsed)
    if out_dir is not None:
        write_index(
            out_dir, KIND, FORMAT_VERSION, {**encoder_params(encoder), "encode_s": elapsed}, len(ids),
            arrays={"vectors": mv.vectors, "offsets": mv.offsets, "doc_ids": ids},
        )  # fmt: skip
    return ids, mv


def load_token_vectors(path: str | Path) -> tuple[np.ndarray, MultiVectors, dict]:
    """Open a directory written by :func:`encode_corpus`: (doc ids, vectors, encoder params)."""
    manifest, arrays, _ = read_index(path, KIND, (FORMAT_VERSION,))
    return arrays["doc_ids"], MultiVectors(arrays["vectors"], arrays["offsets"]), manifest.params


def prune_tokens(
    vectors: MultiVectors, threshold: float, device: str | None = None, batch_docs: int = 256
) -> MultiVectors:
    """Drop near-duplicate tokens within each document (index-time token pruning).

    Tokens are visited in order; one is dropped when its cosine with an already kept token
    of the same document is >= ``threshold``. For unit vectors that bounds the change of any
    MaxSim term by ``sqrt(2 - 2 * threshold)``.

    Raises:
        InvalidInput: a threshold outside (-1, 1].
    """
    from cascade.retrieval.errors import require
    from cascade.retrieval.late.maxsim import pad_rows
    from cascade.retrieval.models import resolve_device

    torch = require("torch", "models")
    if not -1.0 < threshold <= 1.0:
        raise InvalidInput(f"prune_threshold must be in (-1, 1], got {threshold}")
    dev = resolve_device(device)
    flat = torch.as_tensor(np.asarray(vectors.vectors)).to(dev, torch.float32)
    offsets = torch.as_tensor(np.asarray(vectors.offsets, np.int64)).to(dev)
    keep_all = []
    for s in range(0, len(vectors), batch_docs):
        d, m = pad_rows(flat, offsets, torch.arange(s, min(len(vectors), s + batch_docs), device=dev))
        sim = torch.bmm(d, d.transpose(1, 2)) >= threshold
        keep = torch.zeros_like(m)
        for j in range(m.shape[1]):  # greedy in token order: a loop over positions, not documents
            keep[:, j] = m[:, j] & ~(sim[:, :j, j] & keep[:, :j]).any(dim=1)
        keep_all.append(keep[m])
    keep = torch.cat(keep_all).cpu().numpy()
    kept_before = np.concatenate([[0], np.cumsum(keep)])  # kept tokens before each position
    offsets_out = kept_before[np.asarray(vectors.offsets, np.int64)].astype(np.int64)
    log.info("token pruning at %.2f kept %d of %d tokens", threshold, int(keep.sum()), len(keep))
    return MultiVectors(np.asarray(vectors.vectors)[keep], offsets_out)

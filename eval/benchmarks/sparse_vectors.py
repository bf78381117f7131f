"""The vectors ``cascade bench sparse`` searches: SPLADE encodings of a dataset, or BM25 impacts.

Both are integer impacts (documents as a docs x terms CSR matrix, queries as a queries x terms
CSR matrix over the same vocabulary), so every contender (ours, scipy, Lucene, Seismic) scores
the same integer dot products and exact rankings can be compared id for id.

SPLADE encodings are cached on disk under Cascade's cache dir, keyed by the dataset's
fingerprint, the split and the encoder's configuration, so a rerun does not encode again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cascade.eval.datasets import Dataset, cache_dir
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.sparse.vectors import quantize
from cascade.retrieval.storage import atomic_dir

log = logging.getLogger(__name__)

#: the offline SPLADE checkpoint the bench encodes with when no ``model`` is given
SPLADE_TINY = Path(__file__).resolve().parents[3] / "shared" / "models" / "splade-tiny"


@dataclass(frozen=True)
class SparseWorkload:
    """Integer document and query impacts over one vocabulary, and what they are."""

    doc_ids: list[str]
    docs: sp.csr_matrix
    query_ids: list[str]
    queries: sp.csr_matrix
    vocab: list[str]
    scale: float
    description: str


def default_model() -> str | None:
    """SPLADE-tiny's directory when it is there (the shared offline checkpoint), else None."""
    return str(SPLADE_TINY) if (SPLADE_TINY / "config.json").is_file() else None


def splade_cache_dir(ds: Dataset, manifest: dict, scale: float, cache: Path | None = None) -> Path:
    """Where the encoded vectors of ``ds`` under an encoder ``manifest`` are cached."""
    key = hashlib.sha256(
        json.dumps([ds.name, ds.fingerprint, ds.split, manifest, scale], sort_keys=True).encode()
    ).hexdigest()[:16]
    return (cache or cache_dir() / "sparse_vectors") / f"{ds.name}-{ds.split}-{key}"


def store_vectors(folder: Path, ds: Dataset, docs: sp.csr_matrix, queries: sp.csr_matrix, vocab: list[str],
                  manifest: dict, scale: float) -> None:  # fmt: skip
    """Write quantized document and query vectors (rows in corpus and query order) to the cache."""
    with atomic_dir(folder) as tmp:
        sp.save_npz(tmp / "docs.npz", docs)
        sp.save_npz(tmp / "queries.npz", queries)
        meta = {"doc_ids": [d.id for d in ds.corpus()], "query_ids": [q.id for q in ds.queries], "vocab": vocab,
                "config": manifest, "scale": scale}  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta))


def splade_workload(ds: Dataset, model: str, scale: float = 100.0, device: str | None = None,
                    cache: Path | None = None) -> SparseWorkload:  # fmt: skip
    """The dataset's corpus and queries encoded by :class:`SpladeEncoder` (default config but
    ``model``), quantized at ``scale``; encoded once, then read from the cache."""
    from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

    config = SpladeConfig(model=model, device=device)
    manifest = config.to_manifest()
    folder = splade_cache_dir(ds, manifest, scale, cache)
    if not (folder / "meta.json").is_file():
        encoder = SpladeEncoder(config)
        log.info("encoding the corpus and %d queries of %s with %s", len(ds.queries), ds.name, model)
        dmat = quantize(encoder.encode_documents([d.contents for d in ds.corpus()]), scale)
        qmat = quantize(encoder.encode_queries([q.text for q in ds.queries]), scale)
        store_vectors(folder, ds, dmat, qmat, encoder.vocab, manifest, scale)
    meta = json.loads((folder / "meta.json").read_text())
    name = Path(model).name if Path(model).is_dir() else model
    return SparseWorkload(
        meta["doc_ids"], sp.load_npz(folder / "docs.npz").tocsr(), meta["query_ids"],
        sp.load_npz(folder / "queries.npz").tocsr(), meta["vocab"], scale,
        f"SPLADE ({name}, max_length {manifest['max_length'] or 'model limit'}/"
        f"{manifest['query_max_length'] or 'model limit'}) weights "
        f"x{scale:g} rounded to integers, documents and queries",
    )  # fmt: skip


def bm25_workload(ds: Dataset, scale: float = 100.0) -> SparseWorkload:
    """BM25 term weights (Anserini's k1=0.9, b=0.4) x ``scale`` as integer impacts; queries are
    bag-of-words term counts (about 5 terms per SciFact query, not a learned-sparse workload)."""
    docs = list(ds.corpus())
    bm25 = BM25Retriever.build(docs, show_progress=False)
    m = bm25._matrix.T.tocsr()
    m.data = np.rint(m.data.astype(np.float64) * scale)
    m.eliminate_zeros()
    m.data = m.data.astype(np.uint16)
    queries = bm25.query_matrix(ds.queries).tocsr()
    return SparseWorkload(bm25.doc_ids.tolist(), m, [q.id for q in ds.queries], queries, list(bm25.vocab), scale,
                          f"BM25 impacts (k1=0.9, b=0.4) x{scale:g}, integer; queries: term counts")  # fmt: skip


def load_workload(ds: Dataset, vectors: str = "splade", model: str | None = None, scale: float = 100.0,
                  device: str | None = None) -> SparseWorkload:  # fmt: skip
    """``vectors``: ``splade`` (``model``, default SPLADE-tiny) or ``bm25``."""
    if vectors == "bm25":
        return bm25_workload(ds, scale)
    if vectors != "splade":
        raise InvalidInput(f"unknown vectors {vectors!r}; valid: splade, bm25")
    model = model or default_model()
    if model is None:
        raise InvalidInput(f"no SPLADE model: pass --opt model=DIR_OR_ID ({SPLADE_TINY} is missing)")
    return splade_workload(ds, model, scale, device)


def replicate(w: SparseWorkload, copies: int, seed: int = 0) -> SparseWorkload:
    """The corpus ``copies`` times as one larger corpus: copy ``c`` of document ``i`` has id
    ``"<i>#<c>"`` and its impacts scaled by U(0.7, 1.3) per posting (>= 1), so copies are
    near each other but no two documents are equal."""
    if copies <= 1:
        return w
    rng = np.random.default_rng(seed)
    m = w.docs
    mats = [m] + [
        sp.csr_matrix((np.maximum(1, np.rint(m.data * rng.uniform(0.7, 1.3, m.nnz))).astype(m.dtype), m.indices,
                       m.indptr), shape=m.shape)
        for _ in range(copies - 1)
    ]  # fmt: skip
    ids = [f"{i}#{c}" if c else i for c in range(copies) for i in w.doc_ids]
    return SparseWorkload(ids, sp.vstack(mats).tocsr(), w.query_ids, w.queries, w.vocab, w.scale,
                          f"{w.description}; corpus replicated {copies}x (perturbed copies)")  # fmt: skip

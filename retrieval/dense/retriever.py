"""Dense retrieval: one vector per document (or per chunk), searched by inner product.

The index is either exact (``flat``: the embeddings themselves, kept as a memory-mapped
``.npy``) or a faiss approximate index (HNSW, IVF with PQ or SQ8, or any faiss factory
string) serialized into a ``uint8`` array, so every format saves through
:func:`retrieval.storage.write_index` like the others. Exact search runs on faiss-gpu when
installed, plain torch on a GPU otherwise, and CPU faiss as the fallback.

Chunked documents (late or naive chunking) keep one vector per chunk and a map from
vector to document; a document scores as its best chunk.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from cascade.retrieval.base import Retriever
from cascade.retrieval.errors import IndexMismatch, InvalidInput, require
from cascade.retrieval.models import DEFAULT_DENSE_MODEL, dtype_name
from cascade.retrieval.storage import read_index, write_index
from cascade.retrieval.types import Document, Query, Ranking

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

#: Short names for common index layouts; anything else is passed to faiss.index_factory.
INDEX_ALIASES = ("flat", "hnsw", "ivf-pq", "ivf-sq8")


def index_factory_string(index: str, num_vectors: int, dim: int) -> str:
    """Expand an alias into a faiss factory string sized for the collection.

    IVF uses about 4 sqrt(N) lists, capped so that every list gets >= 39 training points
    (faiss's own floor); PQ uses dim/4 sub-quantizers of 8 bits (16x smaller than fp32),
    without polysemous training (``np``): it only serves Hamming pre-filtering, which we do
    not use, and it costs far more than the PQ training itself.
    """
    nlist = max(1, min(int(4 * math.sqrt(num_vectors)), num_vectors // 39))
    pq = dim // 4 if dim % 4 == 0 else dim
    return {
        "flat": "Flat", "hnsw": "HNSW32", "ivf-pq": f"IVF{nlist},PQ{pq}np", "ivf-sq8": f"IVF{nlist},SQ8",
    }.get(index.lower(), index)  # fmt: skip


class DenseRetriever(Retriever):
    """Bi-encoder retrieval over a flat or faiss index.

    Example:
        >>> dense = DenseRetriever.build(docs, index="hnsw")   # doctest: +SKIP
        >>> dense.search([Query("1", "stem cells")], k=10)     # doctest: +SKIP
    """

    kind = "dense"
    #: build() takes a ``work_dir`` for resumable shards (cascade.indexing.index_set passes one)
    resumable_build = True

    def __init__(
        self,
        config,
        doc_ids: np.ndarray,
        factory: str = "Flat",
        embeddings: np.ndarray | None = None,
        faiss_index: Any = None,
        vec_doc: np.ndarray | None = None,
        chunking: dict | None = None,
        ef_search: int = 128,
        nprobe: int = 16,
        device: str | None = None,
        encoder=None,
        encode_dtype: str | None = None,
    ):
        self.config = config  # an EncoderConfig, or a RemoteEncoderConfig (cascade.retrieval.encoders)
        self.doc_ids = doc_ids
        self.factory = factory
        self.embeddings = embeddings
        self.faiss_index = faiss_index
        self.vec_doc = vec_doc
        self.chunking = chunking
        self.ef_search, self.nprobe = int(ef_search), int(nprobe)
        self.device = device
        self._encoder = encoder
        # the dtype the documents were encoded in (the manifest records it; None: not recorded)
        self.encode_dtype = encode_dtype or (dtype_name(encoder.dtype) if encoder is not None else None)
        self._exact: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None
        self.dim = int(embeddings.shape[1] if embeddings is not None else faiss_index.d)
        self.num_vectors = int(embeddings.shape[0] if embeddings is not None else faiss_index.ntotal)

    # -- build ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        model: str = DEFAULT_DENSE_MODEL,
        index: str = "flat",
        matryoshka_dim: int | None = None,
        batch_size: int = 256,
        device: str | None = None,
        dtype: str | None = None,
        max_tokens: int | None = None,
        layers: int | None = None,
        chunking: str | None = None,
        chunk_size: int = 256,
        chunk_overlap: int = 32,
        prompts: str | None = None,
        encoder_settings: dict[str, Any] | None = None,
        work_dir: str | Path | None = None,
        shard_size: int = 2048,
        train_size: int = 100_000,
        ef_search: int = 128,
        nprobe: int = 16,
        seed: int = 0,
        show_progress: bool = True,
        on_shard: Callable[[int], None] | None = None,
    ) -> Self:
        """Encode a document stream (title and text) and index the vectors.

        Args:
            docs: the corpus.
            model: hub id or local directory of a sentence-transformers or plain HF model, or
                ``openai:BASE_URL#MODEL`` for an OpenAI-compatible embeddings endpoint
                (:mod:`cascade.retrieval.encoders.remote`; encoder_settings then take its settings).
            index: ``flat`` (exact), ``hnsw``, ``ivf-pq``, ``ivf-sq8`` or a faiss factory string.
            matryoshka_dim: keep the first N dimensions (then re-normalize).
            batch_size, max_tokens, device, dtype: encoder batching and placement.
            layers: encode with the first N transformer layers only.
            chunking: ``None`` (one vector per document), ``"late"`` or ``"naive"``.
            chunk_size, chunk_overlap: chunk windows, in tokens.
            prompts: a prompt preset (``"e5"``, ``"bge"``); encoder_settings: any other
                :class:`cascade.retrieval.encoders.dense.EncoderConfig` field (pooling, normalize, max_length,
                query_prompt, document_prompt; padding_side, append_eos, rope_scaling for decoder
                LLMs; ``pooling: aggretriever`` with agg_dim).
            work_dir: shards of embeddings go there, so a killed build resumes.
            shard_size: documents per shard.
            train_size: vectors sampled to train IVF / PQ / SQ.
            ef_search, nprobe: default HNSW / IVF search breadth.
            on_shard: called after each stored shard (progress reporting, tests).

        Raises:
            InvalidInput: empty corpus, duplicate ids, bad settings; NotFound: unknown model.
        """
        from cascade.retrieval.encoders.backends import dense_encoder
        from cascade.retrieval.encoders.late_chunking import ChunkSpec, chunk_embeddings
        from cascade.retrieval.encoders.remote import is_remote_model
        from cascade.retrieval.encoders.resumable import encode_in_shards

        if chunking is not None and is_remote_model(model):
            raise InvalidInput(
                "chunking needs the model's tokenizer; a remote embedder encodes whole texts only"
            )
        encoder = dense_encoder(
            model, device=device, dtype=dtype, batch_size=batch_size, max_tokens=max_tokens,
            show_progress=show_progress, prompts=prompts, layers=layers, dim=matryoshka_dim,
            **(encoder_settings or {}),
        )  # fmt: skip
        spec = None
        if chunking is not None:
            spec = ChunkSpec.parse({"method": chunking, "max_tokens": chunk_size, "overlap": chunk_overlap})

        def encode(batch: list[Document]) -> tuple[np.ndarray, np.ndarray]:
            texts = [d.contents for d in batch]
            if spec is None:
                return encoder.encode_documents(texts), np.ones(len(batch), dtype=np.int64)
            return chunk_embeddings(encoder, texts, spec)

        settings = {"encoder": encoder.config.to_json(), "dtype": dtype_name(encoder.dtype),
                    # the recorded shape of chunked indexes: method, size, overlap
                    "chunking": {"method": spec.method, "size": spec.max_tokens, "overlap": spec.overlap}
                    if spec else None}  # fmt: skip
        doc_ids, vectors, counts = encode_in_shards(
            docs, encode, work_dir, settings, shard_size, on_shard, show_progress
        )
        vec_doc = None if spec is None else np.repeat(np.arange(len(doc_ids), dtype=np.int64), counts)
        return cls.from_vectors(
            encoder.config, doc_ids, vectors, index, vec_doc, settings["chunking"], train_size=train_size,
            ef_search=ef_search, nprobe=nprobe, seed=seed, device=device, encoder=encoder,
        )  # fmt: skip

    @classmethod
    def from_vectors(
        cls,
        config,
        doc_ids: np.ndarray,
        vectors: np.ndarray,
        index: str = "flat",
        vec_doc: np.ndarray | None = None,
        chunking: dict | None = None,
        train_size: int = 100_000,
        seed: int = 0,
        **kwargs,
    ) -> Self:
        """Index vectors already encoded with ``config`` (benchmarks, re-indexing another layout)."""
        factory = index_factory_string(index, len(vectors), vectors.shape[1])
        embeddings, faiss_index = (vectors, None) if factory == "Flat" else (
            None, _train_faiss(factory, vectors, train_size, seed)
        )  # fmt: skip
        log.info("dense: %d documents, %d vectors of %d dims, index %s",
                 len(doc_ids), len(vectors), vectors.shape[1], factory)  # fmt: skip
        return cls(config, doc_ids, factory, embeddings, faiss_index, vec_doc, chunking, **kwargs)

    # -- search --------------------------------------------------------------------------

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def encoder(self):
        """The query encoder, loaded on first use and checked against the index dimension."""
        if self._encoder is None:
            from cascade.retrieval.encoders.backends import encoder_from_config

            self._encoder = encoder_from_config(self.config, device=self.device, show_progress=False)
        if self._encoder.dim != self.dim:
            raise IndexMismatch(
                f"the query encoder {self.config.model!r} gives {self._encoder.dim}-dim vectors "
                f"but the index holds {self.dim}-dim vectors"
            )
        return self._encoder

    def search(
        self,
        queries: Sequence[Query],
        k: int = 10,
        batch_size: int = 1024,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[Ranking]:
        """Encode queries with the query prompt and return their top ``k`` documents."""
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        vectors = self.encoder.encode_queries([q.text for q in queries])
        return self.search_vectors(queries, vectors, k, batch_size, ef_search, nprobe)

    def search_vectors(
        self,
        queries: Sequence[Query],
        vectors: np.ndarray,
        k: int = 10,
        batch_size: int = 1024,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[Ranking]:
        """Search with query vectors already encoded (one row per query)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise IndexMismatch(f"query vectors of shape {vectors.shape}; the index holds {self.dim}-dim vectors")
        top = self._searcher(ef_search or self.ef_search, nprobe or self.nprobe)
        out: list[Ranking] = []
        for start in range(0, len(queries), batch_size):
            block, qs = vectors[start : start + batch_size], queries[start : start + batch_size]
            if self.vec_doc is None:
                scores, idx = top(block, min(k, self.num_vectors))
                out.extend(_ranking(q.id, s, i, self.doc_ids, k) for q, s, i in zip(qs, scores, idx, strict=True))
            else:
                out.extend(self._chunked(qs, block, k, top))
        return out

    def _chunked(self, queries, block, k, top) -> list[Ranking]:
        """Best chunk per document: widen the vector search until it covers k documents."""
        want, k_vec = min(k, self.num_docs), min(self.num_vectors, 4 * k)
        while True:
            scores, idx = top(block, k_vec)
            docs = [self.vec_doc[i[i >= 0]] for i in idx]
            if k_vec >= self.num_vectors or all(len(np.unique(d)) >= want for d in docs):
                break
            k_vec = min(self.num_vectors, 2 * k_vec)
        out = []
        for q, s, i, d in zip(queries, scores, idx, docs, strict=True):
            _, first = np.unique(d, return_index=True)  # hits come best first: first = best chunk
            out.append(Ranking.from_scores(q.id, self.doc_ids[d[first]], s[i >= 0][first], k))
        return out

    def _searcher(self, ef_search: int, nprobe: int) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
        if self.faiss_index is not None:
            faiss = require("faiss", "dense")
            params = None
            if isinstance(self.faiss_index, faiss.IndexHNSW):
                params = faiss.SearchParametersHNSW(efSearch=ef_search)
            elif isinstance(self.faiss_index, faiss.IndexIVF):
                params = faiss.SearchParametersIVF(nprobe=nprobe)
            return lambda q, k: self.faiss_index.search(q, k, params=params)
        if self._exact is None:
            from .exact import exact_searcher

            self._exact = exact_searcher(self.embeddings, self.device)
        return self._exact

    # -- persistence ---------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        return {
            "encoder": self.config.to_json(), "dim": self.dim, "index": self.factory,
            "num_vectors": self.num_vectors, "chunking": self.chunking, "similarity": "inner_product",
            "ef_search": self.ef_search, "nprobe": self.nprobe, "encode_dtype": self.encode_dtype,
        }  # fmt: skip

    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {"doc_ids": self.doc_ids}
        if self.faiss_index is None:
            arrays["embeddings"] = self.embeddings
        else:
            arrays["faiss_index"] = require("faiss", "dense").serialize_index(self.faiss_index)
        if self.vec_doc is not None:
            arrays["vec_doc"] = self.vec_doc
        write_index(path, self.kind, FORMAT_VERSION, self.params, self.num_docs, arrays)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, model: str | None = None) -> Self:
        """Open an index; ``model`` swaps the query encoder's weights location (same dims).

        Raises:
            NotFound: no index there; IndexMismatch: another kind or format version.
        """
        from cascade.retrieval.encoders.backends import encoder_config_from_json

        manifest, arrays, _ = read_index(path, cls.kind, (FORMAT_VERSION,))
        p = manifest.params
        config = encoder_config_from_json(p["encoder"])
        if model is not None:
            config = dataclasses.replace(config, model=model)
        faiss_index = None
        if "faiss_index" in arrays:
            faiss_index = require("faiss", "dense").deserialize_index(np.asarray(arrays["faiss_index"]))
        return cls(
            config, arrays["doc_ids"], p["index"], arrays.get("embeddings"), faiss_index,
            arrays.get("vec_doc"), p.get("chunking"), p["ef_search"], p["nprobe"], device,
            encode_dtype=p.get("encode_dtype"),
        )  # fmt: skip


def _ranking(query_id: str, scores: np.ndarray, idx: np.ndarray, doc_ids: np.ndarray, k: int) -> Ranking:
    keep = idx >= 0  # faiss pads with -1 when an approximate index finds fewer than k
    return Ranking.from_scores(query_id, doc_ids[idx[keep]], scores[keep], k)


def _train_faiss(factory: str, vectors: np.ndarray, train_size: int, seed: int):
    faiss = require("faiss", "dense")
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise InvalidInput(f"invalid faiss index {factory!r}: {str(e).splitlines()[0]}") from None
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = 200
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(vectors), min(len(vectors), train_size), replace=False))
        try:
            index.train(np.ascontiguousarray(vectors[sample]))
        except RuntimeError as e:
            msg = str(e).splitlines()[0].rpartition("failed: ")[2]
            raise InvalidInput(f"cannot train faiss index {factory!r} on {len(sample)} vectors: {msg}") from None
    index.add(np.ascontiguousarray(vectors))
    return index

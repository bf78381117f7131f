"""The PLAID engine: a ColBERTv2 compressed late-interaction index (kind ``colbert``).

Index: k-means centroids over the token vectors; each token stored as its centroid id
(``codes``) plus an ``nbits``-per-dimension residual (``residuals``, see
retrieval/residual.py); ``doc_offsets`` delimit each document's tokens. Two derived
postings make search cheap: ``bags`` (per document, its distinct centroids) and ``ivf``
(per centroid, the documents that use it).

This module builds, updates, saves and loads the index; the search stages live in
:mod:`cascade.retrieval.late.plaid_search` (batched torch, any device) and :mod:`cascade.retrieval.late.plaid_kernel`
(compiled per-query loops, the CPU default when numba is installed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Self

import numpy as np

from cascade.retrieval.base import Retriever
from cascade.retrieval.encoders.colbert import ColBERTEncoder, MultiVectors
from cascade.retrieval.errors import IndexMismatch, InvalidInput, NotFound, require
from cascade.retrieval.models import DEFAULT_DENSE_MODEL, resolve_device
from cascade.retrieval.storage import read_index, write_index
from cascade.retrieval.types import Document, Query, Ranking

from .plaid_search import HIGH_RECALL, SearchParams, TorchSearcher, numba_arrays, search_numba
from .residual import ResidualCodec

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENGINES = ("auto", "numba", "torch")
__all__ = ["HIGH_RECALL", "PLAIDIndex", "SearchParams"]


class PLAIDIndex(Retriever):
    """A compressed ColBERT index searched with PLAID.

    Build from documents (``build``, encodes them) or from token vectors (``from_vectors``).

    Example:
        >>> index = PLAIDIndex.build(docs, nbits=2)                     # doctest: +SKIP
        >>> index.search([Query("1", "stem cells")], k=10)              # doctest: +SKIP
    """

    kind = "colbert"

    def __init__(
        self,
        centroids: np.ndarray,
        codes: np.ndarray,
        residuals: np.ndarray,
        doc_offsets: np.ndarray,
        doc_ids: np.ndarray,
        codec: ResidualCodec,
        encoder: dict[str, Any] | None = None,
        build_info: dict[str, Any] | None = None,
        postings: dict[str, np.ndarray] | None = None,
        device: str | None = None,
        vectors: np.ndarray | None = None,
    ):
        self.centroids, self.codes, self.residuals = centroids, codes, residuals
        self.vectors = vectors  # optional fp16 originals: the final stage then scores exactly
        self.doc_offsets, self.doc_ids, self.codec = doc_offsets, doc_ids, codec
        self.encoder_params = dict(encoder or {})
        self.build_info = dict(build_info or {})
        self.postings = postings or _postings(codes, doc_offsets, len(centroids))
        self.device = resolve_device(device)
        self._searcher: TorchSearcher | None = None
        self._numba: dict[str, Any] | None = None
        self._encoder: ColBERTEncoder | None = None

    # -- properties ------------------------------------------------------------------------

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def nbits(self) -> int:
        return self.codec.nbits

    @property
    def num_embeddings(self) -> int:
        return len(self.codes)

    def nbytes(self) -> int:
        """Bytes of the arrays the index stores (what ``save`` writes, manifest aside)."""
        return sum(a.nbytes for a in self._arrays().values())

    # -- build -----------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        model: str = DEFAULT_DENSE_MODEL,
        format: str = "auto",
        projection_dim: int | None = None,
        projection_seed: int = 0,
        batch_size: int = 32,
        dtype: str | None = None,
        device: str | None = None,
        show_progress: bool = True,
        **params,
    ) -> Self:
        """Encode documents (title + " " + text) and index their token vectors.

        Args:
            docs: the corpus.
            model, format, projection_dim, projection_seed, batch_size, dtype: the
                :class:`~cascade.retrieval.encoders.colbert.ColBERTEncoder` settings.
            device: where to encode, cluster and search.
            **params: :meth:`from_vectors` settings (nbits, num_centroids, ...).
        """
        from cascade.retrieval.encoders.token_vectors import encode_corpus, encoder_params

        encoder = ColBERTEncoder(
            model, format=format, device=device, dtype=dtype, batch_size=batch_size,
            projection_dim=projection_dim, projection_seed=projection_seed, show_progress=show_progress,
        )  # fmt: skip
        ids, mv = encode_corpus(docs, encoder)
        index = cls.from_vectors(ids, mv, encoder=encoder_params(encoder), device=device, **params)
        index._encoder = encoder
        return index

    @classmethod
    def from_vectors(
        cls,
        doc_ids: Sequence[str] | np.ndarray,
        vectors: MultiVectors,
        nbits: int = 4,
        num_centroids: int | None = None,
        centroids: np.ndarray | None = None,
        kmeans_iters: int = 4,
        max_points_per_centroid: int = 32,
        assign_nprobe: int | None = 16,
        prune_threshold: float | None = None,
        store_vectors: bool = False,
        seed: int = 0,
        encoder: dict[str, Any] | None = None,
        device: str | None = None,
        show_progress: bool = True,
    ) -> Self:
        """Index token vectors: k-means, residual compression, postings.

        Args:
            doc_ids: one id per document, unique.
            vectors: their L2-normalized token vectors.
            nbits: bits per dimension of the residual (1, 2 or 4). The default, 4, is the one
                that reaches recall@10 >= 0.95 against exhaustive MaxSim with PLAID's defaults;
                2 is the compact setting (a smaller index, recall capped lower by the
                compression). Figures: eval/benchmarks/RESULTS.md.
            num_centroids: default 2 ** floor(log2(16 * sqrt(#embeddings))).
            centroids: reuse these (k, dim) centroids (e.g. another index's, to compare nbits
                on one clustering) instead of running k-means.
            kmeans_iters: Lloyd iterations.
            max_points_per_centroid: k-means runs on a random sample of at most this many
                embeddings per centroid (faiss's and ColBERT's practice).
            assign_nprobe: with 4096+ centroids, assign tokens two-level through this many
                centroid groups (see cascade.retrieval.late.kmeans.assign); None: exact, compared with every
                centroid.
            prune_threshold: if set, drop a document token whose cosine with a kept token of
                the same document is >= this (MaxSim changes by at most sqrt(2 - 2t) per
                query token); None keeps every token.
            store_vectors: also keep the fp16 token vectors; the last stage then ranks by exact
                MaxSim instead of decompressed vectors (the high-recall setting; the index
                grows by 2 * dim bytes per token).
            seed: fixes the sample and the k-means initialization.
            encoder: the encoder settings to store, so text queries can be encoded at search.

        Raises:
            InvalidInput: empty input, duplicate ids, bad nbits or dim.
        """
        from cascade.retrieval.encoders.token_vectors import prune_tokens

        from .kmeans import assign, default_num_centroids, kmeans

        torch = require("torch", "models")
        t0 = time.perf_counter()
        doc_ids = np.asarray(list(doc_ids) if not isinstance(doc_ids, np.ndarray) else doc_ids, dtype=str)
        if len(doc_ids) != len(vectors):
            raise InvalidInput(f"{len(doc_ids)} doc ids but {len(vectors)} documents of vectors")
        if len(set(doc_ids.tolist())) != len(doc_ids):
            raise InvalidInput("duplicate document ids")
        if prune_threshold is not None:
            vectors = prune_tokens(vectors, prune_threshold, device=device)
        n = len(vectors.vectors)
        if n == 0:
            raise InvalidInput("no token vectors to index")
        dim = int(vectors.vectors.shape[1])
        if nbits not in (1, 2, 4) or dim % (8 // nbits):
            raise InvalidInput(f"nbits must be 1, 2 or 4 with dim a multiple of 8/nbits (dim {dim}, nbits {nbits})")
        if centroids is not None and (np.ndim(centroids) != 2 or np.shape(centroids)[1] != dim):
            raise InvalidInput(f"centroids must be (k, {dim}), got {np.shape(centroids)}")
        k = len(centroids) if centroids is not None else min(num_centroids or default_num_centroids(n), n)
        rng = np.random.default_rng(seed)
        sample_n = min(n, k * max_points_per_centroid)
        sample = np.sort(rng.choice(n, sample_n, replace=False)) if sample_n < n else np.arange(n)
        dev = resolve_device(device)
        two_level = {"nprobe": assign_nprobe or 1, "two_level_from": 4096 if assign_nprobe else 1 << 62}
        if centroids is None:
            centroids = kmeans(
                np.asarray(vectors.vectors[sample]), k, kmeans_iters, seed, str(dev), show_progress, **two_level
            )
        else:
            sample_n = 0
            centroids = torch.as_tensor(np.asarray(centroids, np.float32)).to(dev)
        centroids = centroids.half().float()  # as stored: residuals are taken against these exact values
        t_kmeans = time.perf_counter() - t0
        codes = assign(np.asarray(vectors.vectors), centroids, **two_level).cpu().numpy().astype(_code_dtype(k))
        heldout = np.sort(rng.choice(n, min(n, 1 << 16), replace=False))
        held = torch.as_tensor(np.asarray(vectors.vectors[heldout], np.float32)).to(dev)
        codec = ResidualCodec.fit((held - centroids[torch.as_tensor(codes[heldout].astype(np.int64)).to(dev)]).cpu().numpy(), nbits)
        residuals = np.empty((n, codec.packed_width(dim)), np.uint8)
        for s in range(0, n, 1 << 16):
            x = torch.as_tensor(np.asarray(vectors.vectors[s : s + (1 << 16)], np.float32)).to(dev)
            c = torch.as_tensor(codes[s : s + (1 << 16)].astype(np.int64)).to(dev)
            residuals[s : s + len(x)] = codec.compress(x - centroids[c]).cpu().numpy()
        info = {
            "build_s": round(time.perf_counter() - t0, 3), "kmeans_s": round(t_kmeans, 3),
            "kmeans_iters": kmeans_iters if sample_n else 0, "kmeans_sample": int(sample_n), "seed": seed,
            "prune_threshold": prune_threshold, "assign_nprobe": assign_nprobe,
        }  # fmt: skip
        log.info("plaid: %d docs, %d embeddings, %d centroids, nbits=%d in %.1f s", len(doc_ids), n, k, nbits, info["build_s"])
        return cls(
            centroids.cpu().numpy().astype(np.float16), codes, residuals,
            np.asarray(vectors.offsets, np.int64), doc_ids, codec, encoder, info, device=device,
            vectors=np.asarray(vectors.vectors, np.float16) if store_vectors else None,
        )  # fmt: skip

    # -- incremental updates ---------------------------------------------------------------

    def add(self, docs: Iterable[Document]) -> None:
        """Encode and append documents, with the existing centroids and buckets (no rebuild)."""
        from cascade.retrieval.encoders.token_vectors import encode_corpus

        ids, mv = encode_corpus(docs, self.encoder)
        self.add_vectors(ids, mv)

    def add_vectors(self, doc_ids: Sequence[str] | np.ndarray, vectors: MultiVectors) -> None:
        """Append documents given as token vectors; raises InvalidInput on a duplicate id."""
        torch = require("torch", "models")
        from .kmeans import assign

        doc_ids = np.asarray(list(doc_ids), dtype=str)
        if len(doc_ids) != len(vectors):
            raise InvalidInput(f"{len(doc_ids)} doc ids but {len(vectors)} documents of vectors")
        if vectors.vectors.ndim != 2 or vectors.vectors.shape[1] != self.dim:
            raise IndexMismatch(f"vectors have dim {vectors.vectors.shape[-1]}; this index holds dim {self.dim}")
        dup = set(doc_ids.tolist()) & set(self.doc_ids.tolist())
        if dup or len(set(doc_ids.tolist())) != len(doc_ids):
            raise InvalidInput(f"document ids already indexed or repeated: {sorted(dup)[:5]}")
        cents = torch.as_tensor(np.asarray(self.centroids, np.float32))
        x = torch.as_tensor(np.asarray(vectors.vectors, np.float32))
        nprobe = self.build_info.get("assign_nprobe", 16)  # assign as the build did
        codes = assign(x, cents, nprobe=nprobe or 1, two_level_from=4096 if nprobe else 1 << 62)
        packed = self.codec.compress(x - cents[codes]).numpy()
        base = self.doc_offsets[-1]
        if self.vectors is not None:
            self.vectors = np.concatenate([self.vectors, np.asarray(vectors.vectors, np.float16)])
        self._replace(
            np.concatenate([self.codes, codes.numpy().astype(self.codes.dtype)]),
            np.concatenate([self.residuals, packed]),
            np.concatenate([self.doc_offsets, base + np.asarray(vectors.offsets[1:], np.int64)]),
            np.concatenate([self.doc_ids, doc_ids]),
        )

    def delete(self, ids: Iterable[str]) -> None:
        """Remove documents by id (their tokens and postings).

        Raises:
            NotFound: naming every id that is not in the index (nothing is deleted then).
        """
        ids = list(ids)
        present = np.isin(np.asarray(ids, dtype=str), self.doc_ids)
        if not present.all():
            missing = [i for i, p in zip(ids, present, strict=True) if not p]
            raise NotFound(f"documents not in the index: {', '.join(map(str, missing[:20]))}")
        gone = np.isin(self.doc_ids, np.asarray(ids, dtype=str))
        lens = np.diff(self.doc_offsets)
        keep_tok = np.repeat(~gone, lens)
        offsets = np.zeros(int((~gone).sum()) + 1, np.int64)
        np.cumsum(lens[~gone], out=offsets[1:])
        if self.vectors is not None:
            self.vectors = self.vectors[keep_tok]
        self._replace(self.codes[keep_tok], self.residuals[keep_tok], offsets, self.doc_ids[~gone])

    def _replace(self, codes, residuals, offsets, doc_ids) -> None:
        self.codes, self.residuals, self.doc_offsets, self.doc_ids = codes, residuals, offsets, doc_ids
        self.postings = _postings(codes, offsets, len(self.centroids))
        self._searcher = self._numba = None

    # -- search ----------------------------------------------------------------------------

    @property
    def encoder(self) -> ColBERTEncoder:
        if self._encoder is None:
            p = self.encoder_params
            if not p.get("model"):
                raise InvalidInput("this index was built from vectors with no encoder; use search_vectors")
            self._encoder = ColBERTEncoder(
                p["model"], format=p.get("format", "auto"), device=str(self.device),
                projection_dim=p.get("projection_dim"), projection_seed=p.get("projection_seed", 0),
                query_maxlen=p.get("query_maxlen", 32), doc_maxlen=p.get("doc_maxlen", 256),
            )  # fmt: skip
            if self._encoder.dim != self.dim:
                raise IndexMismatch(f"encoder {p['model']} gives dim {self._encoder.dim}; index holds {self.dim}")
        return self._encoder

    def search(
        self, queries: Sequence[Query], k: int = 10, batch_size: int | None = None, **params
    ) -> list[Ranking]:  # fmt: skip
        """Encode the queries and search; ``params`` override :class:`SearchParams` fields."""
        qv = self.encoder.encode_queries([q.text for q in queries])
        scores, idx = self.search_vectors(qv, k, batch_size=batch_size, **params)
        return [
            Ranking.from_scores(q.id, self.doc_ids[i[i >= 0]], s[i >= 0], k)
            for q, s, i in zip(queries, scores, idx, strict=True)
        ]

    def search_vectors(
        self,
        queries: MultiVectors,
        k: int = 10,
        ncells: int | None = None,
        centroid_score_threshold: float | None = None,
        ndocs: int | None = None,
        batch_size: int | None = None,
        engine: str = "auto",
    ) -> tuple[np.ndarray, np.ndarray]:
        """PLAID search with query token vectors.

        Args:
            queries: token vectors, one row per query.
            k: hits per query.
            ncells, centroid_score_threshold, ndocs: default :meth:`SearchParams.for_k`.
            batch_size: queries searched together (default 256 on a GPU, 64 on a CPU).
            engine: ``numba`` (compiled, CPU), ``torch`` (batched tensors, any device) or
                ``auto``: numba on a CPU when it is installed, else torch. Same results.

        Returns:
            (scores, doc indices), both (num queries, k); missing hits are -inf / -1.

        Raises:
            IndexMismatch: query dim differs from the index's. InvalidInput: k < 1, an
            unknown engine, or numba asked for on a GPU index or without numba installed.
        """
        torch = require("torch", "models")
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        if queries.vectors.ndim != 2 or queries.vectors.shape[1] != self.dim:
            raise IndexMismatch(f"query vectors have dim {queries.vectors.shape[-1]}; this index holds dim {self.dim}")
        use_numba = self._use_numba(engine)
        d = SearchParams.for_k(k)
        p = SearchParams(
            ncells if ncells is not None else d.ncells,
            centroid_score_threshold if centroid_score_threshold is not None else d.centroid_score_threshold,
            ndocs if ndocs is not None else d.ndocs,
        )
        batch_size = batch_size or (256 if self.device.type == "cuda" else 64)
        out_s = np.full((len(queries), k), float("-inf"), np.float32)
        out_i = np.full((len(queries), k), -1, np.int64)
        with torch.inference_mode():
            for s in range(0, len(queries), batch_size):
                rows = [np.asarray(queries[r], np.float32) for r in range(s, min(len(queries), s + batch_size))]
                if use_numba:
                    if self._numba is None:
                        self._numba = numba_arrays(self)
                    sc, ix = search_numba(self._numba, rows, k, p, threads=torch.get_num_threads())
                else:
                    q_np, qm_np = MultiVectors.from_list(rows, self.dim).padded()
                    q, qm = (torch.as_tensor(x, device=self.device) for x in (q_np, qm_np))
                    sc, ix = (x.cpu().numpy() for x in self.searcher.search(q, qm, k, p))
                out_s[s : s + len(rows)], out_i[s : s + len(rows)] = sc, ix
        return out_s, out_i

    def _use_numba(self, engine: str) -> bool:
        if engine not in ENGINES:
            raise InvalidInput(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
        if engine == "torch":
            return False
        from cascade.retrieval.compiled import AVAILABLE

        if engine == "numba" and (not AVAILABLE or self.device.type != "cpu"):
            raise InvalidInput("engine='numba' needs numba installed (extra 'fast') and a CPU index")
        return AVAILABLE and self.device.type == "cpu"

    @property
    def searcher(self) -> TorchSearcher:
        """The index's arrays on its device, with the batched torch search (built once)."""
        if self._searcher is None:
            self._searcher = TorchSearcher(self, self.device)
        return self._searcher

    def decompressed(self) -> MultiVectors:
        """Every document's decompressed token vectors (for tests and exact reference scoring)."""
        t = self.searcher
        vecs = self.codec.decompress(t.centroids, t.codes, t.residuals, t.table)
        return MultiVectors(vecs.cpu().numpy(), np.asarray(self.doc_offsets))

    # -- persistence -----------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "centroids": self.centroids, "codes": self.codes, "residuals": self.residuals,
            "doc_offsets": self.doc_offsets, "doc_ids": self.doc_ids,
            "bucket_cutoffs": self.codec.cutoffs, "bucket_weights": self.codec.weights,
            **self.postings,
            **({"vectors": self.vectors} if self.vectors is not None else {}),
        }  # fmt: skip

    def save(self, path: str | Path) -> None:
        params = {
            "dim": self.dim, "nbits": self.nbits, "num_centroids": len(self.centroids),
            "num_embeddings": self.num_embeddings, "encoder": self.encoder_params, "build": self.build_info,
        }  # fmt: skip
        write_index(path, self.kind, FORMAT_VERSION, params, self.num_docs, self._arrays())

    @classmethod
    def load(
        cls, path: str | Path, device: str | None = None, dim: int | None = None, nbits: int | None = None
    ) -> Self:
        """Open a saved index (arrays memory-mapped).

        Args:
            device: where to search.
            dim, nbits: if given, the index must have been built with these.

        Raises:
            NotFound: no index there. IndexMismatch: another kind, format, dim or nbits.
        """
        manifest, a, _ = read_index(path, cls.kind, (FORMAT_VERSION,))
        p = manifest.params
        for name, want in (("dim", dim), ("nbits", nbits)):
            if want is not None and p[name] != want:
                raise IndexMismatch(f"{path} was built with {name}={p[name]}, not {name}={want}")
        codec = ResidualCodec(p["nbits"], np.asarray(a["bucket_cutoffs"]), np.asarray(a["bucket_weights"]))
        if a["residuals"].shape[1] != codec.packed_width(p["dim"]) or a["centroids"].shape[1] != p["dim"]:
            raise IndexMismatch(f"{path}: arrays do not match dim={p['dim']}, nbits={p['nbits']}")
        postings = {name: a[name] for name in ("ivf_indptr", "ivf_pids", "bag_offsets", "bag_codes")}
        return cls(
            a["centroids"], a["codes"], a["residuals"], a["doc_offsets"], a["doc_ids"], codec,
            p.get("encoder"), p.get("build"), postings, device, a.get("vectors"),
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {
            "docs": self.num_docs, "embeddings": self.num_embeddings, "centroids": len(self.centroids),
            "dim": self.dim, "nbits": self.nbits, "bytes": self.nbytes(), **self.build_info,
            "defaults_k10": asdict(SearchParams.for_k(10)),
        }  # fmt: skip


def _postings(codes: np.ndarray, doc_offsets: np.ndarray, num_centroids: int) -> dict[str, np.ndarray]:
    """Bags (document -> its distinct centroids) and the IVF (centroid -> documents)."""
    lens = np.diff(doc_offsets)
    n_docs = len(lens)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), lens)
    key = np.unique(doc_of * num_centroids + np.asarray(codes, np.int64))
    bag_doc, bag_code = key // num_centroids, key % num_centroids
    bag_offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(np.bincount(bag_doc, minlength=n_docs), out=bag_offsets[1:])
    order = np.argsort(bag_code, kind="stable")  # stable: documents ascending per centroid
    ivf_indptr = np.zeros(num_centroids + 1, np.int64)
    np.cumsum(np.bincount(bag_code, minlength=num_centroids), out=ivf_indptr[1:])
    return {
        "ivf_indptr": ivf_indptr, "ivf_pids": bag_doc[order].astype(np.int32),
        "bag_offsets": bag_offsets, "bag_codes": bag_code.astype(_code_dtype(num_centroids)),
    }  # fmt: skip


def _code_dtype(num_centroids: int):
    """Centroid ids in 2 bytes when they fit (up to 65,536 centroids), else 4."""
    return np.uint16 if num_centroids <= 1 << 16 else np.int32

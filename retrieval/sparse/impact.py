"""A native inverted impact index for learned-sparse vectors (SPLADE and friends).

Postings are plain numpy arrays (doc indexes int32 ascending per term, integer impacts
uint8/uint16), saved through :mod:`retrieval.storage` and loaded memory-mapped. Exact search
runs the whole query batch in one compiled call when numba is installed
(:mod:`cascade.retrieval.sparse.impact_kernel`, :mod:`cascade.retrieval.sparse.seismic_kernel`, extra ``fast``), else a MaxScore vectorized with numpy over
the batch (:mod:`cascade.retrieval.sparse.impact_search`); either way the results equal a brute-force sparse
dot product ranked by :meth:`Ranking.from_scores`. The approximate mode follows Seismic
(:mod:`cascade.retrieval.sparse.impact_approx`: static pruning, blocks with summary vectors, query term cut).

Queries come as sparse vectors (``{term: weight}`` dicts or a CSR matrix over the index
vocabulary) through :meth:`ImpactRetriever.search_vectors` (rankings) or
:meth:`ImpactRetriever.search_arrays` (arrays), or as text through
:meth:`ImpactRetriever.search` when the index knows its SPLADE query encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp

from cascade.retrieval.base import Retriever
from cascade.retrieval.errors import IndexMismatch, InvalidInput, require
from cascade.retrieval.models import dtype_name
from cascade.retrieval.storage import read_index, write_index
from cascade.retrieval.topk import doc_names, id_ranks, rankings_from_rows
from cascade.retrieval.types import Document, Query, Ranking

from .impact_approx import BLOCK_ARRAYS, ApproxParams, summaries_by_term
from .impact_build import HEAD_SIZE, forward_postings, index_arrays
from .impact_search import _SLACK, Lookup, Postings, top_k_arrays
from .vectors import check_vocab, vectors_to_csr, vocab_hash

log = logging.getLogger(__name__)

#: 3: block summaries stored by list and term (2: by block, regrouped when loaded).
FORMAT_VERSION = 3
DEFAULT_APPROX = ApproxParams()

__all__ = ["DEFAULT_APPROX", "ApproxParams", "ImpactHits", "ImpactRetriever"]


@dataclass(frozen=True)
class ImpactHits:
    """Top hits of a query batch as arrays: row i holds ``counts[i]`` hits, best first.

    ``docs`` (doc indexes, -1 past the count) and ``scores`` are (queries x k).
    """

    docs: np.ndarray
    scores: np.ndarray
    counts: np.ndarray


class ImpactRetriever(Retriever):
    """Inverted impact index over integer-quantized sparse document vectors.

    Example:
        >>> index = ImpactRetriever.from_vectors(doc_ids, doc_matrix, vocab, scale=100)  # doctest: +SKIP
        >>> index.search_vectors([{"cell": 2.0, "stem": 1.0}], k=10)  # doctest: +SKIP
    """

    kind = "impact"

    def __init__(self, arrays: Mapping[str, np.ndarray], vocab: list[str], params: Mapping[str, Any]):
        self.vocab = vocab
        self.params = dict(params)
        self.doc_ids = arrays["doc_ids"]
        self._names = doc_names(self.doc_ids)
        self.full = Postings(arrays["indptr"], arrays["docs"], arrays["impacts"])
        self.heads = Postings(arrays["head_indptr"], arrays["head_docs"], arrays["head_impacts"])
        self.max_impact = np.asarray(arrays["max_impact"], dtype=np.float64)
        self.blocks = None
        if "summary_terms" in arrays:  # format 2
            arrays = {**arrays, **summaries_by_term(arrays["term_blocks"], arrays["summary_ptr"],
                                                    arrays["summary_terms"], arrays["summary_values"], len(vocab))}
        if "block_ptr" in arrays:
            self.blocks = {name: arrays[name] for name in BLOCK_ARRAYS}
        self.id_rank = id_ranks(self.doc_ids)
        # Derived in memory when first needed: the numpy engine's impact lookups and the
        # approximate mode's forward index (doc -> terms).
        self._lookup: Lookup | None = None
        self._forward: Postings | None = None
        self._term_index: dict[str, int] | None = None
        self._encoder = None

    # -- build ---------------------------------------------------------------------------

    @classmethod
    def from_vectors(
        cls,
        doc_ids: Sequence[str],
        vectors: sp.spmatrix,
        vocab: Sequence[str],
        scale: float,
        approx: ApproxParams | None = DEFAULT_APPROX,
        encoder: Mapping[str, Any] | None = None,
    ) -> Self:
        """Index integer impacts, one row of ``vectors`` per document.

        Args:
            doc_ids: document ids, unique, in row order.
            vectors: (docs x vocab) sparse matrix of non-negative integer impacts.
            vocab: the term of each column.
            scale: the factor the impacts were quantized with (kept in the manifest).
            approx: parameters of the approximate mode's blocks (None: no approximate mode).
            encoder: the SPLADE encoder config, so text queries can be encoded at search time.

        Raises:
            InvalidInput: float or negative impacts, duplicate ids, shape mismatches.
        """
        m = sp.csr_matrix(vectors)
        if m.shape != (len(doc_ids), len(vocab)):
            raise InvalidInput(f"vectors have shape {m.shape} for {len(doc_ids)} docs x {len(vocab)} terms")
        if len(set(doc_ids)) != len(doc_ids):
            raise InvalidInput("document ids must be unique")
        if len(doc_ids) == 0:
            raise InvalidInput("the corpus is empty: nothing to index")
        data = m.data
        if m.nnz and (not np.issubdtype(data.dtype, np.integer) and not np.array_equal(data, np.rint(data))):
            raise InvalidInput(
                "impacts must be integers: quantize the vectors first (sparse_vectors.quantize)"
            )
        if m.nnz and data.min() < 0:
            raise InvalidInput("impacts must be >= 0")
        arrays, dtype = index_arrays(doc_ids, m, len(vocab), approx)
        params = {
            "scale": float(scale), "vocab_size": len(vocab), "vocab_hash": vocab_hash(vocab),
            "impact_dtype": dtype.name, "head_size": HEAD_SIZE,
            "approx": asdict(approx) if approx is not None else None, "encoder": dict(encoder or {}) or None,
        }  # fmt: skip
        log.info("impact index: %d docs, %d terms, %d postings", len(doc_ids), len(vocab), len(arrays["docs"]))
        return cls(arrays, list(vocab), params)

    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        model: str = "naver/splade-v3",
        query_model: str | None = None,
        scale: float = 100.0,
        approx: Mapping[str, Any] | None = None,
        **encoder_params: Any,
    ) -> Self:
        """Encode documents with a SPLADE model and index their quantized impacts.

        Args:
            docs: the corpus.
            model: the document encoder (a HF masked-LM id or directory).
            query_model: a separate query encoder (default: ``model``).
            scale: impact quantization factor.
            approx: :class:`ApproxParams` fields for the approximate mode.
            encoder_params: further :class:`cascade.retrieval.encoders.splade.SpladeConfig` fields
                (``doc_top_k``, ``query_top_k``, ``max_length``, ``batch_size``, ``device``...).
        """
        from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder, quantize

        docs = list(docs)
        config = SpladeConfig(model=model, query_model=query_model, **encoder_params)
        encoder = SpladeEncoder(config)
        vectors = quantize(encoder.encode_documents([d.contents for d in docs]), scale)
        index = cls.from_vectors(
            [d.id for d in docs], vectors, encoder.vocab, scale,
            ApproxParams(**(approx or {})), config.to_manifest(),
        )  # fmt: skip
        index.params["encode_dtype"] = dtype_name(encoder.dtype)  # recorded, not a setting: the machine picks
        index._encoder = encoder
        return index

    # -- search --------------------------------------------------------------------------

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def scale(self) -> float:
        return self.params["scale"]

    def _query_encoder(self):
        if self._encoder is None:
            if not self.params.get("encoder"):
                raise InvalidInput(
                    "this impact index has no query encoder: pass sparse vectors to search_vectors()"
                )
            from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

            self._encoder = SpladeEncoder(SpladeConfig.from_manifest(self.params["encoder"]))
        return self._encoder

    def use_query_encoder(self, encoder) -> None:
        """Encode text queries with ``encoder`` (e.g. a smaller query model over the same vocabulary).

        Raises:
            IndexMismatch: the encoder's vocabulary is not the index's.
        """
        check_vocab(self.params["vocab_size"], self.params["vocab_hash"], len(encoder.vocab),
                    vocab_hash(encoder.vocab), f"query encoder {encoder.config.query_model_id!r}")  # fmt: skip
        self._encoder = encoder

    def search(
        self, queries: Sequence[Query], k: int = 10, mode: Literal["exact", "approx"] = "exact"
    ) -> list[Ranking]:
        """Encode text queries with the index's SPLADE query encoder and search them."""
        if not queries:
            return []
        encoder = self._query_encoder()
        check_vocab(self.params["vocab_size"], self.params["vocab_hash"], len(encoder.vocab),
                    vocab_hash(encoder.vocab), "the query encoder")  # fmt: skip
        return self.search_vectors(encoder.encode_queries([q.text for q in queries]), k,
                                   [q.id for q in queries], mode)  # fmt: skip

    def search_vectors(
        self,
        vectors: sp.spmatrix | Sequence[Mapping[str, float]],
        k: int = 10,
        query_ids: Sequence[str] | None = None,
        mode: Literal["exact", "approx"] = "exact",
        engine: Literal["auto", "numba", "numpy"] = "auto",
        approx: ApproxParams | None = None,
    ) -> list[Ranking]:
        """Top ``k`` documents by sparse dot product for each query vector.

        Args:
            vectors: a (queries x vocab) CSR matrix, or one ``{term: weight}`` dict per query.
            k: hits per query.
            query_ids: ids for the rankings (default "0", "1", ...).
            mode: ``"exact"`` (equals brute force) or ``"approx"`` (Seismic-style, numba only).
            engine: the compiled kernels (``numba``, extra ``fast``), the vectorized numpy
                MaxScore (exact mode only), or ``auto`` (numba when installed). Both exact
                engines give the same rankings.
            approx: search-time approximate parameters (``query_terms``, ``heap_factor``);
                default: the ones the index was built with.

        Returns:
            One ranking per query; a query left without terms gets an empty ranking (logged).

        Raises:
            InvalidInput: bad k, mode, engine, ids or weights. IndexMismatch: a matrix of
            another width. MissingDependency: approximate search without numba.
        """
        q = self._query_matrix(vectors)
        ids = [str(i) for i in range(q.shape[0])] if query_ids is None else list(query_ids)
        if len(ids) != q.shape[0]:
            raise InvalidInput(f"{len(ids)} query ids for {q.shape[0]} query vectors")
        hits = self._search(q, k, mode, engine, approx, ids)
        # Hits arrive sorted by score desc, doc id asc (the id_rank tie-break, the same order
        # Ranking.from_scores gives): no second sort per query.
        return rankings_from_rows(ids, hits.docs, hits.scores, hits.counts, self._names)

    def search_arrays(
        self,
        vectors: sp.spmatrix | Sequence[Mapping[str, float]],
        k: int = 10,
        mode: Literal["exact", "approx"] = "exact",
        engine: Literal["auto", "numba", "numpy"] = "auto",
        approx: ApproxParams | None = None,
    ) -> ImpactHits:
        """:meth:`search_vectors` returning doc indexes and scores as arrays (no Ranking objects).

        Doc index ``i`` is the document ``self.doc_ids[i]``. Same arguments and errors.
        """
        return self._search(self._query_matrix(vectors), k, mode, engine, approx, None)

    def _query_matrix(self, vectors) -> sp.csr_matrix:
        if self._term_index is None and not sp.issparse(vectors):
            self._term_index = {t: i for i, t in enumerate(self.vocab)}
        return vectors_to_csr(vectors, self.vocab, self._term_index)

    def _search(self, q: sp.csr_matrix, k: int, mode: str, engine: str, approx: ApproxParams | None,
                ids: list[str] | None) -> ImpactHits:  # fmt: skip
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        if mode not in ("exact", "approx"):
            raise InvalidInput(f"unknown search mode {mode!r}; valid: exact, approx")
        if engine not in ("auto", "numba", "numpy"):
            raise InvalidInput(f"unknown engine {engine!r}; valid: auto, numba, numpy")
        if mode == "approx" and self.blocks is None:
            raise InvalidInput("this index was built without approximate-search blocks (approx=None)")
        if mode == "approx" and engine == "numpy":
            raise InvalidInput("the approximate mode runs on the compiled engine only (engine='numba')")
        # Drop zero weights and terms no document has: they cannot score.
        keep = (q.data > 0) & (self.max_impact[q.indices] > 0)
        indptr = np.zeros(q.shape[0] + 1, dtype=np.int64)
        rows = np.repeat(np.arange(q.shape[0]), np.diff(q.indptr))
        np.cumsum(np.bincount(rows[keep], minlength=q.shape[0]), out=indptr[1:])
        terms, weights = q.indices[keep].astype(np.int64), q.data[keep].astype(np.float64)
        for i in np.flatnonzero(np.diff(indptr) == 0):
            log.warning("query %s has no terms left that occur in the index: no hits", ids[i] if ids else i)
        from cascade.retrieval.compiled import AVAILABLE

        if engine == "numpy" or (engine == "auto" and not AVAILABLE):
            if self._lookup is None:
                self._lookup = Lookup(self.full, self.num_docs)
            return ImpactHits(*top_k_arrays(self._lookup, self.max_impact, self.heads, self.id_rank, indptr, terms,
                                            weights, k))  # fmt: skip
        require("numba", "fast")
        from . import impact_kernel

        if mode == "exact":
            f = self.full
            return ImpactHits(*impact_kernel.exact_top_k(f.indptr, f.docs, f.impacts, self.id_rank, indptr,
                                                         terms, weights, k))  # fmt: skip
        built = ApproxParams(**self.params["approx"])
        p = built.search_only(approx) if approx is not None else built
        fwd, b = self.forward(), self.blocks
        from . import seismic_kernel

        return ImpactHits(*seismic_kernel.seismic_top_k(
            *(b[name] for name in BLOCK_ARRAYS), fwd.indptr, fwd.docs, fwd.impacts, self.id_rank,
            self.max_impact, indptr, terms, weights, k, p.query_terms, p.heap_factor, _SLACK,
        ))  # fmt: skip

    def forward(self) -> Postings:
        """The impacts by document (doc -> terms ascending), derived from the postings once."""
        if self._forward is None:
            m = self.document_matrix()
            self._forward = forward_postings(m, m.dtype)
        return self._forward

    # -- persistence ---------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "doc_ids": self.doc_ids, "indptr": self.full.indptr, "docs": self.full.docs,
            "impacts": self.full.impacts, "max_impact": self.max_impact.astype(self.full.impacts.dtype),
            "head_indptr": self.heads.indptr, "head_docs": self.heads.docs, "head_impacts": self.heads.impacts,
        }  # fmt: skip
        return {**arrays, **(self.blocks or {})}

    def save(self, path: str | Path) -> None:
        write_index(path, self.kind, FORMAT_VERSION, self.params, self.num_docs, self._arrays(),
                    json_files={"vocab": self.vocab})  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Self:
        manifest, arrays, jsons = read_index(path, cls.kind, (2, FORMAT_VERSION))
        vocab = jsons["vocab"]
        if len(vocab) != manifest.params["vocab_size"] or vocab_hash(vocab) != manifest.params["vocab_hash"]:
            raise IndexMismatch(f"{path}: vocab.json does not match the manifest's vocabulary size/hash")
        return cls(arrays, vocab, manifest.params)

    def document_matrix(self) -> sp.csr_matrix:
        """The indexed impacts as a (docs x vocab) CSR matrix (for export and brute force)."""
        csc = sp.csc_matrix(
            (np.asarray(self.full.impacts), np.asarray(self.full.docs), np.asarray(self.full.indptr)),
            shape=(self.num_docs, len(self.vocab)),
        )
        return csc.tocsr()

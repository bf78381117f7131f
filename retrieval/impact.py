"""A native inverted impact index for learned-sparse vectors (SPLADE and friends).

Postings are plain numpy arrays (doc indexes int32 ascending per term, integer impacts
uint8/uint16), saved through :mod:`retrieval.storage` and loaded memory-mapped. Search is
exact MaxScore, compiled with numba when installed (:mod:`retrieval.impact_kernel`, extra
``fast``) or vectorized with numpy over a batch of queries (:mod:`retrieval.impact_search`);
either way the results equal a brute-force sparse dot product ranked by
:meth:`Ranking.from_scores`. An approximate mode in the spirit of Seismic (static posting
pruning, query term cut) trades recall for speed.

Queries come as sparse vectors (``{term: weight}`` dicts or a CSR matrix over the index
vocabulary) through :meth:`ImpactRetriever.search_vectors`, or as text through
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

from .base import Retriever
from .errors import IndexMismatch, InvalidInput
from .impact_search import Lookup, Postings, top_k_batch
from .sparse_vectors import check_vocab, impact_dtype, prune_rows, vectors_to_csr, vocab_hash
from .storage import read_index, write_index
from .topk import id_ranks
from .types import Document, Query, Ranking

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Highest-impact postings kept per term for the score lower bound of the pruning.
HEAD_SIZE = 16
#: Dense accumulator budget per batch (queries x documents float64 cells).
_ACC_CELLS = 1 << 19


@dataclass(frozen=True)
class ApproxParams:
    """Seismic-style approximation knobs.

    Args:
        postings_fraction: static pruning: each term keeps its heaviest postings, at most this
            fraction of its list (and at least ``min_postings``), for candidate generation.
        min_postings: floor of the static pruning.
        query_terms: query term cut: only the heaviest query terms are searched.
        theta_boost: the score bound is multiplied by this for pruning decisions (>= 1).
    """

    postings_fraction: float = 0.25
    min_postings: int = 64
    query_terms: int = 16
    theta_boost: float = 1.0

    def __post_init__(self):
        if not 0 < self.postings_fraction <= 1 or self.min_postings < 1:
            raise InvalidInput("postings_fraction must be in (0, 1] and min_postings >= 1")
        if self.query_terms < 1 or self.theta_boost < 1:
            raise InvalidInput("query_terms must be >= 1 and theta_boost >= 1")


DEFAULT_APPROX = ApproxParams()


def _numba_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def _term_ranks(indptr: np.ndarray, docs: np.ndarray, impacts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Postings ordered by term, impact descending, doc ascending; and each one's rank in its term."""
    term = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((docs, -impacts.astype(np.int64), term))
    return order, np.arange(len(order)) - indptr[term[order]]


def _sublists(indptr: np.ndarray, docs: np.ndarray, impacts: np.ndarray, keep: np.ndarray) -> Postings:
    """The postings selected by a boolean mask, still in CSR layout (doc order kept)."""
    term = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    new_ptr = np.zeros(len(indptr), dtype=np.int64)
    np.cumsum(np.bincount(term[keep], minlength=len(indptr) - 1), out=new_ptr[1:])
    return Postings(new_ptr, docs[keep], impacts[keep])


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
        n_docs = len(self.doc_ids)
        self.full = Postings(arrays["indptr"], arrays["docs"], arrays["impacts"])
        self.heads = Postings(arrays["head_indptr"], arrays["head_docs"], arrays["head_impacts"])
        self.max_impact = np.asarray(arrays["max_impact"], dtype=np.float64)
        self._pruned: Postings | None = None
        if "pruned_indptr" in arrays:
            self._pruned = Postings(arrays["pruned_indptr"], arrays["pruned_docs"], arrays["pruned_impacts"])
            # per term, the smallest impact its pruned list kept: a bound on any impact it dropped
            lengths = np.diff(self._pruned.indptr)
            self._pruned_floor = np.zeros(len(vocab))
            self._pruned_floor[lengths > 0] = np.minimum.reduceat(
                np.asarray(self._pruned.impacts, dtype=np.float64), self._pruned.indptr[:-1][lengths > 0]
            )
        # Derived in memory: impact lookups (dense rows for common terms) and the id tie-break.
        self.lookup = Lookup(self.full, n_docs)
        self.id_rank = id_ranks(self.doc_ids)
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
            approx: parameters of the statically pruned lists for approximate search (None: none).
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
        m.eliminate_zeros()
        post = sp.csc_matrix(m)  # terms become the major axis; row (doc) indexes come out sorted
        post.sort_indices()
        dtype = impact_dtype(int(post.data.max()) if post.nnz else 0)
        indptr = post.indptr.astype(np.int64)
        docs = post.indices.astype(np.int32)
        impacts = post.data.astype(dtype)
        max_impact = np.zeros(len(vocab), dtype=dtype)
        nonempty = np.diff(indptr) > 0
        if nonempty.any():
            max_impact[nonempty] = np.maximum.reduceat(impacts, indptr[:-1][nonempty])
        order, rank = _term_ranks(indptr, docs, impacts)
        head = np.zeros(len(docs), dtype=bool)
        head[order[rank < HEAD_SIZE]] = True
        heads = _sublists(indptr, docs, impacts, head)
        arrays = {
            "doc_ids": np.asarray(doc_ids, dtype=str), "indptr": indptr, "docs": docs, "impacts": impacts,
            "max_impact": max_impact, "head_indptr": heads.indptr, "head_docs": heads.docs,
            "head_impacts": heads.impacts,
        }  # fmt: skip
        if approx is not None:
            lengths = np.diff(indptr)
            term = np.repeat(np.arange(len(vocab)), lengths)
            limit = np.maximum(np.ceil(lengths * approx.postings_fraction), approx.min_postings)
            keep = np.zeros(len(docs), dtype=bool)
            keep[order[rank < limit[term[order]]]] = True
            pruned = _sublists(indptr, docs, impacts, keep)
            arrays.update(pruned_indptr=pruned.indptr, pruned_docs=pruned.docs, pruned_impacts=pruned.impacts)
        params = {
            "scale": float(scale), "vocab_size": len(vocab), "vocab_hash": vocab_hash(vocab),
            "impact_dtype": dtype.name, "head_size": HEAD_SIZE,
            "approx": asdict(approx) if approx is not None else None, "encoder": dict(encoder or {}) or None,
        }  # fmt: skip
        log.info("impact index: %d docs, %d terms, %d postings", len(doc_ids), len(vocab), len(docs))
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
            encoder_params: further :class:`indexing.splade_encode.SpladeConfig` fields
                (``doc_top_k``, ``query_top_k``, ``max_length``, ``batch_size``, ``device``...).
        """
        from indexing.splade_encode import SpladeConfig, SpladeEncoder, quantize

        docs = list(docs)
        config = SpladeConfig(model=model, query_model=query_model, **encoder_params)
        encoder = SpladeEncoder(config)
        vectors = quantize(encoder.encode_documents([d.contents for d in docs]), scale)
        index = cls.from_vectors(
            [d.id for d in docs], vectors, encoder.vocab, scale,
            ApproxParams(**(approx or {})), config.to_manifest(),
        )  # fmt: skip
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
            from indexing.splade_encode import SpladeConfig, SpladeEncoder

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
    ) -> list[Ranking]:
        """Top ``k`` documents by sparse dot product for each query vector.

        Args:
            vectors: a (queries x vocab) CSR matrix, or one ``{term: weight}`` dict per query.
            k: hits per query.
            query_ids: ids for the rankings (default "0", "1", ...).
            mode: ``"exact"`` (equals brute force) or ``"approx"`` (Seismic-style pruning).
            engine: the compiled MaxScore (``numba``, extra ``fast``), the vectorized numpy one,
                or ``auto`` (numba when installed). Both give the same rankings.

        Returns:
            One ranking per query; a query left without terms gets an empty ranking (logged).

        Raises:
            InvalidInput: bad k, mode, ids or weights. IndexMismatch: a matrix of another width.
        """
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        if mode not in ("exact", "approx"):
            raise InvalidInput(f"unknown search mode {mode!r}; valid: exact, approx")
        if engine not in ("auto", "numba", "numpy"):
            raise InvalidInput(f"unknown engine {engine!r}; valid: auto, numba, numpy")
        if mode == "approx" and self._pruned is None:
            raise InvalidInput("this index was built without approximate-search lists (approx=None)")
        if self._term_index is None and not sp.issparse(vectors):
            self._term_index = {t: i for i, t in enumerate(self.vocab)}
        q = vectors_to_csr(vectors, self.vocab, self._term_index)
        ids = [str(i) for i in range(q.shape[0])] if query_ids is None else list(query_ids)
        if len(ids) != q.shape[0]:
            raise InvalidInput(f"{len(ids)} query ids for {q.shape[0]} query vectors")
        if mode == "approx":
            q = prune_rows(q, ApproxParams(**self.params["approx"]).query_terms)
        # Drop zero weights and terms no document has: they cannot score.
        q = sp.csr_matrix(q.multiply(self.max_impact[None, :] > 0))
        q.eliminate_zeros()
        for i in np.flatnonzero(np.diff(q.indptr) == 0):
            log.warning("query %s has no terms left that occur in the index (after pruning): no hits", ids[i])
        use_numba = engine == "numba" or (engine == "auto" and _numba_available())
        batch = q.shape[0] if use_numba else max(1, min(256, _ACC_CELLS // self.num_docs))
        out: list[Ranking] = []
        for start in range(0, q.shape[0], batch):
            run = self._run_numba if use_numba else self._run_numpy
            out.extend(self._rankings(ids[start : start + batch], *run(q[start : start + batch], k, mode)))
        return out

    def _run_numpy(self, q: sp.csr_matrix, k: int, mode: str):
        approx = ApproxParams(**self.params["approx"]) if mode == "approx" else None
        res = top_k_batch(
            self.lookup, self.max_impact, self.heads, self.id_rank,
            np.repeat(np.arange(q.shape[0]), np.diff(q.indptr)), q.indices.astype(np.int64), q.data,
            q.shape[0], k, essential_lists=self._pruned if approx else None,
            theta_boost=approx.theta_boost if approx else 1.0,
        )  # fmt: skip
        return res.docs, res.scores, res.bounds

    def _run_numba(self, q: sp.csr_matrix, k: int, mode: str):
        from .errors import require

        require("numba", "fast")
        from .impact_kernel import maxscore_batch
        from .impact_search import _SLACK, BLOCK_SHIFT

        approx = ApproxParams(**self.params["approx"]) if mode == "approx" else None
        ess = self._pruned if approx else self.full
        n, b = self.num_docs, q.shape[0]
        out_docs, out_scores = np.zeros((b, k), dtype=np.int64), np.zeros((b, k))
        counts = np.zeros(b, dtype=np.int64)
        maxscore_batch(
            self.full.indptr, self.full.docs, self.full.impacts, ess.indptr, ess.docs, ess.impacts,
            self._pruned_floor if approx else np.zeros(len(self.vocab)), approx is None,
            self.max_impact, self.lookup.slot, self.lookup.block_max, BLOCK_SHIFT, self.id_rank, q.indptr.astype(np.int64), q.indices.astype(np.int64), q.data.astype(np.float64), k,
            approx.theta_boost if approx else 1.0, _SLACK, np.zeros(n), np.zeros(n, dtype=np.int64),
            out_docs, out_scores, counts,
        )  # fmt: skip
        keep = np.arange(k)[None, :] < counts[:, None]
        return out_docs[keep], out_scores[keep], np.r_[0, np.cumsum(counts)]

    def _rankings(self, ids: list[str], doc_index: np.ndarray, scores: np.ndarray, bounds: np.ndarray):
        docs, scores = self.doc_ids[doc_index].tolist(), scores.tolist()
        # Hits arrive sorted by score desc, doc id asc (the id_rank tie-break, the same order
        # Ranking.from_scores gives); building Ranking directly skips a second sort per query.
        return [
            Ranking(qid, tuple(docs[lo:hi]), tuple(scores[lo:hi]))
            for qid, lo, hi in zip(ids, bounds[:-1], bounds[1:], strict=True)
        ]

    # -- persistence ---------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "doc_ids": self.doc_ids, "indptr": self.full.indptr, "docs": self.full.docs,
            "impacts": self.full.impacts, "max_impact": self.max_impact.astype(self.full.impacts.dtype),
            "head_indptr": self.heads.indptr, "head_docs": self.heads.docs, "head_impacts": self.heads.impacts,
        }  # fmt: skip
        if self._pruned is not None:
            arrays.update(pruned_indptr=self._pruned.indptr, pruned_docs=self._pruned.docs,
                          pruned_impacts=self._pruned.impacts)  # fmt: skip
        return arrays

    def save(self, path: str | Path) -> None:
        write_index(path, self.kind, FORMAT_VERSION, self.params, self.num_docs, self._arrays(),
                    json_files={"vocab": self.vocab})  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Self:
        manifest, arrays, jsons = read_index(path, cls.kind, (FORMAT_VERSION,))
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

"""BM25, native and numpy-first: postings as CSR arrays, queries scored as one sparse product.

Two scoring variants, picked by name:

- ``lucene`` (default): what Lucene >= 8 / Anserini computes. idf = ln(1 + (N - n + 0.5) /
  (n + 0.5)), term weight = idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)), with ``dl`` the
  document length after Lucene's lossy one-byte norm encoding (``SmallFloat.intToByte4``).
- ``okapi``: the classic Robertson formula as rank-bm25's ``BM25Okapi`` computes it,
  including its floor for negative idf (epsilon * mean idf) and exact lengths.

The index stores term frequencies and lengths, so term weights are recomputed at load
for any ``k1``/``b`` without re-tokenizing the corpus, and for another collection's
statistics (:class:`CollectionStats`, passed to ``search``) when the index is one part of a
larger collection (a shard, a segment). An index written by the streaming build
(:mod:`.bm25_build`, format version 2) also stores each posting's weight under its own k1/b and
statistics: loaded with those, it computes no weight matrix.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp

from cascade.retrieval.base import Retriever
from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.progress import progress
from cascade.retrieval.storage import Manifest, read_index, write_index
from cascade.retrieval.topk import doc_names, id_ranks, rankings_from_rows, top_k_sparse_rows
from cascade.retrieval.types import Document, Query, Ranking, check_unique

from .analysis import Analyzer, TermIds

log = logging.getLogger(__name__)

#: Documents whose (doc, term) counts are taken together, by one numpy sort.
_COUNT_BATCH = 1024

FORMAT_VERSION = 1
#: Version 1 plus ``weights.npy``: each posting's weight under the saved k1, b and variant and
#: the index's own statistics (:mod:`.bm25_build` writes it; loading then computes no weights).
WEIGHTS_FORMAT_VERSION = 2


# --- Lucene's SmallFloat.intToByte4 / byte4ToInt, vectorized -------------------------------

_NUM_FREE_VALUES = 24  # 255 - longToInt4(Integer.MAX_VALUE)


def _long_to_int4(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int64)
    nbits = np.zeros_like(x)
    nz = x > 0
    nbits[nz] = np.floor(np.log2(x[nz])).astype(np.int64) + 1
    shift = np.maximum(nbits - 4, 0)
    enc = ((x >> shift) & 0x07) | ((shift + 1) << 3)
    return np.where(nbits < 4, x, enc)


def _int4_to_long(i: np.ndarray) -> np.ndarray:
    bits = i & 0x07
    shift = (i >> 3) - 1
    return np.where(shift == -1, bits, (bits | 0x08) << np.maximum(shift, 0))


def lucene_quantized_length(lengths: np.ndarray) -> np.ndarray:
    """Document lengths as Lucene sees them after encoding the norm in one byte."""
    lengths = np.asarray(lengths, dtype=np.int64)
    small = lengths < _NUM_FREE_VALUES
    enc = _long_to_int4(np.maximum(lengths - _NUM_FREE_VALUES, 0))
    dec = _NUM_FREE_VALUES + _int4_to_long(enc)
    return np.where(small, lengths, dec)


# --- scoring variants: small pure functions picked by name ----------------------------------
# A posting's weight is idf(term) x saturation(tf, norm(doc)); the length norm is computed per
# document, once, and looked up per posting (Lucene's one-byte length encoding alone costs
# more than the rest of the weight when it runs per posting).


def _lucene_idf(df, all_df, n_docs):
    return np.log1p((n_docs - df + 0.5) / (df + 0.5))


def _okapi_idf(df, all_df, n_docs, epsilon=0.25):
    idf = np.log((n_docs - df + 0.5) / (df + 0.5))
    # rank-bm25 floors negative idf at epsilon x the mean idf of the whole vocabulary
    mean_idf = np.log((n_docs - all_df + 0.5) / (all_df + 0.5)).mean()
    return np.where(idf < 0, epsilon * mean_idf, idf)


@dataclass(frozen=True)
class Variant:
    """One BM25 formula: ``idf(df, all_df, n_docs)``, the per-document length norm
    ``norm(doc_lens, avgdl, k1, b)`` and ``saturation(tf, norm, k1)``."""

    idf: Callable[..., np.ndarray]
    norm: Callable[..., np.ndarray]
    saturation: Callable[..., np.ndarray]

    def weights(self, tfs, norms, idfs, k1) -> np.ndarray:
        """float32 weights of postings, given their tfs and their documents' norms and terms' idfs."""
        return (idfs * self.saturation(np.asarray(tfs, np.float64), norms, k1)).astype(np.float32)


VARIANTS = {
    "lucene": Variant(
        _lucene_idf,
        lambda dl, avgdl, k1, b: k1 * (1 - b + b * lucene_quantized_length(dl) / avgdl),
        lambda tf, norm, k1: tf / (tf + norm),
    ),
    "okapi": Variant(
        _okapi_idf,
        lambda dl, avgdl, k1, b: k1 * (1 - b + b * np.asarray(dl, np.float64) / avgdl),
        lambda tf, norm, k1: tf * (k1 + 1) / (tf + norm),
    ),
}

@dataclass(frozen=True)
class CollectionStats:
    """What BM25's idf and length norm depend on. A part of a collection (a shard, a segment)
    searched with the stats of the whole collection gives exactly the scores one index over
    the whole collection would."""

    num_docs: int
    total_length: int
    df: dict[str, int]

    @classmethod
    def merge(cls, parts: Iterable[CollectionStats]) -> CollectionStats:
        df: Counter[str] = Counter()
        n = total = 0
        for p in parts:
            n, total = n + p.num_docs, total + p.total_length
            df.update(p.df)
        return cls(n, total, dict(df))


@dataclass(frozen=True)
class _Weights:
    """A BM25 weight matrix (terms x documents) and the statistics it was computed with."""

    stats: CollectionStats | None
    matrix: sp.csr_matrix

    @cached_property
    def positive(self) -> bool:
        """Every weight > 0, as the compiled kernel needs (it marks unseen documents by 0)."""
        return bool(self.matrix.nnz == 0 or self.matrix.data.min() > 0)


class BM25Retriever(Retriever):
    """BM25 over an inverted index held as CSR arrays (terms x documents).

    Example:
        >>> bm25 = BM25Retriever.build(docs)          # doctest: +SKIP
        >>> bm25.search([Query("1", "stem cells")], k=10)  # doctest: +SKIP
    """

    kind = "bm25"

    def __init__(
        self,
        vocab: list[str],
        indptr: np.ndarray,
        postings: np.ndarray,
        tfs: np.ndarray,
        doc_lens: np.ndarray,
        doc_ids: np.ndarray,
        analyzer: Analyzer,
        k1: float = 0.9,
        b: float = 0.4,
        variant: str = "lucene",
        weights: np.ndarray | None = None,
    ):
        """``weights``: each posting's BM25 weight under ``k1``, ``b``, ``variant`` and this
        index's own statistics, when already computed (a version-2 index stores them)."""
        if variant not in VARIANTS:
            raise InvalidInput(f"unknown BM25 variant {variant!r}; valid: {', '.join(VARIANTS)}")
        self.vocab = vocab
        self.term_index = {t: i for i, t in enumerate(vocab)}
        self.indptr, self.postings, self.tfs = indptr, postings, tfs
        self.doc_lens, self.doc_ids = doc_lens, doc_ids
        self._names, self._id_ranks = doc_names(doc_ids), id_ranks(doc_ids)
        self.analyzer = analyzer
        self.k1, self.b, self.variant = float(k1), float(b), variant
        self._last: _Weights | None = None  # the weights for the last stats passed to search
        if weights is not None and len(weights) != len(postings):
            raise InvalidInput(f"{len(weights)} weights for {len(postings)} postings")
        self._stored_weights = weights

    # -- build ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        k1: float = 0.9,
        b: float = 0.4,
        variant: str = "lucene",
        stemmer: str | None = "porter",
        stopwords: Iterable[str] | None = None,
        show_progress: bool = True,
    ) -> Self:
        """Tokenize a stream of documents (title and text) and index them."""
        analyzer = Analyzer(stemmer, stopwords)
        terms = TermIds(analyzer)  # ids in order of first appearance: the same vocabulary on every run
        doc_ids: list[str] = []
        pairs, tfs, lens = [], [], []
        stream = iter(progress(check_unique(docs), "bm25 index", enabled=show_progress))
        while chunk := list(islice(stream, _COUNT_BATCH)):
            ids, n = terms.encode(doc.contents for doc in chunk)
            docs_of = np.repeat(np.arange(len(doc_ids), len(doc_ids) + len(chunk), dtype=np.int64), n)
            # (doc, term) pairs and their counts in one sort, no Counter per document
            key, tf = np.unique(docs_of << 32 | ids, return_counts=True)
            pairs.append(key)
            tfs.append(tf.astype(np.int32))
            lens.append(n)
            doc_ids.extend(doc.id for doc in chunk)
        if not doc_ids:
            raise InvalidInput("the corpus is empty: nothing to index")
        key = np.concatenate(pairs)
        terms_arr = (key & 0xFFFFFFFF).astype(np.int32)
        order = np.argsort(terms_arr, kind="stable")  # stable: doc ids stay ascending per term
        indptr = np.zeros(len(terms.terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms_arr, minlength=len(terms.terms)), out=indptr[1:])
        log.info("bm25: %d documents, %d terms, %d postings", len(doc_ids), len(terms.terms), len(order))
        return cls(
            vocab=terms.terms,
            indptr=indptr,
            postings=(key >> 32).astype(np.int32)[order],
            tfs=np.concatenate(tfs)[order],
            doc_lens=np.concatenate(lens),
            doc_ids=np.array(doc_ids, dtype=str),
            analyzer=analyzer,
            k1=k1,
            b=b,
            variant=variant,
        )

    def collection_stats(self, live: np.ndarray | None = None) -> CollectionStats:
        """This index's statistics, or those of only the ``live`` documents (a bool per
        document, in this index's order): what a collection that deletes documents counts."""
        if live is None:
            df = np.diff(self.indptr)
            return CollectionStats(
                self.num_docs, int(self.doc_lens.sum()), dict(zip(self.vocab, df.tolist(), strict=True))
            )
        live = np.asarray(live, dtype=bool)
        seen = np.concatenate(([0], np.cumsum(live[np.asarray(self.postings)], dtype=np.int64)))
        df = seen[self.indptr[1:]] - seen[self.indptr[:-1]]  # live postings per term; 0 stays
        total = int(np.asarray(self.doc_lens, dtype=np.int64)[live].sum())
        return CollectionStats(int(live.sum()), total, dict(zip(self.vocab, df.tolist(), strict=True)))

    @classmethod
    def build_streaming(cls, docs: Iterable[Document], path: str | Path, **kw) -> Manifest:
        """Index ``docs`` straight into the directory ``path`` in bounded memory (the same index
        as ``build(docs).save(path)``, with the weights stored); open it with :meth:`load`.
        See :func:`~cascade.retrieval.sparse.bm25_build.build_streaming` for the arguments."""
        from .bm25_build import build_streaming

        return build_streaming(docs, path, **kw)

    @cached_property
    def _own(self) -> _Weights:
        if self._stored_weights is not None:
            shape = (len(self.vocab), len(self.doc_lens))
            matrix = sp.csr_matrix((self._stored_weights, self.postings, self.indptr), shape=shape)
            return _Weights(None, matrix)
        return _Weights(None, self._weight_matrix(None))

    @property
    def _matrix(self) -> sp.csr_matrix:
        """Term weights (terms x documents) with this index's own statistics."""
        return self._own.matrix

    def _weights(self, stats: CollectionStats | None) -> _Weights:
        """Term weights under ``stats`` (this index's own when ``None``). The weights of the
        last stats object passed in are kept (matched by identity), so a collection's parts
        compute them once per collection state, not per search; they are a cache, and what
        a search returns depends only on its arguments."""
        if stats is None:
            return self._own
        last = self._last
        if last is None or last.stats is not stats:
            last = self._last = _Weights(stats, self._weight_matrix(stats))
        return last

    def _weight_matrix(self, stats: CollectionStats | None) -> sp.csr_matrix:
        if stats is None:
            df = np.diff(self.indptr).astype(np.float64)
            all_df, n_docs, total = df, len(self.doc_lens), float(self.doc_lens.sum())
        else:
            missing = [t for t in self.vocab if t not in stats.df]
            if missing:
                raise InvalidInput(f"collection stats lack {len(missing)} of this index's terms, e.g. {missing[0]!r}")
            df = np.array([stats.df[t] for t in self.vocab], dtype=np.float64)
            all_df = np.fromiter(stats.df.values(), dtype=np.float64, count=len(stats.df))
            n_docs, total = stats.num_docs, float(stats.total_length)
        term_of_posting = np.repeat(np.arange(len(self.vocab)), np.diff(self.indptr))
        variant = VARIANTS[self.variant]
        norms = variant.norm(self.doc_lens, total / n_docs, self.k1, self.b)
        idfs = variant.idf(df, all_df, n_docs)[term_of_posting]
        weights = variant.weights(self.tfs, norms[self.postings], idfs, self.k1)
        return sp.csr_matrix(
            (weights, np.asarray(self.postings), np.asarray(self.indptr)), shape=(len(self.vocab), len(self.doc_lens))
        )

    # -- search --------------------------------------------------------------------------

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    def query_matrix(self, queries: Sequence[Query]) -> sp.csr_matrix:
        """Queries as a (queries x terms) matrix of term counts; unknown terms are dropped.

        Repeated query terms count as often as they occur, like Anserini's bag-of-words query.
        """
        indptr, cols, counts = self._query_arrays(queries)
        return sp.csr_matrix((counts, cols, indptr), shape=(len(queries), len(self.vocab)))

    def _query_arrays(self, queries: Sequence[Query]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`query_matrix`'s CSR arrays (indptr, columns, counts), without building the
        scipy matrix: the compiled kernel takes them as they are, and scipy's checks on a
        matrix of one query cost more than the kernel's search of a small collection."""
        indptr, cols, vals = [0], [], []
        term_index = self.term_index
        for q in queries:
            counts: dict[int, int] = {}
            for term in self.analyzer(q.text):
                col = term_index.get(term)
                if col is not None:
                    counts[col] = counts.get(col, 0) + 1
            cols.extend(counts)
            vals.extend(counts.values())
            indptr.append(len(cols))
        return np.asarray(indptr, dtype=np.int64), np.asarray(cols, dtype=np.int64), np.asarray(vals, dtype=np.float64)

    def search(
        self,
        queries: Sequence[Query],
        k: int = 10,
        batch_size: int = 256,
        engine: str = "auto",
        stats: CollectionStats | None = None,
    ) -> list[Ranking]:
        """Top ``k`` per query. ``engine``: ``numba`` (compiled loop, extra ``fast``),
        ``scipy`` (one sparse product per batch), or ``auto`` (numba when installed).
        ``stats``: score with a whole collection's statistics when this index is one part of
        it (:mod:`cascade.retrieval.partition`); ``None``: with this index's own."""
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        if engine not in ("auto", "numba", "scipy"):
            raise InvalidInput(f"unknown engine {engine!r}; valid: auto, numba, scipy")
        # the compiled kernel marks unseen documents by a zero score, so it needs weights > 0
        # (always so for Lucene's idf; a corpus-wide Okapi floor could break it)
        from cascade.retrieval.compiled import AVAILABLE

        use_numba = engine == "numba" or (engine == "auto" and AVAILABLE)
        weights = self._weights(stats)
        use_numba = use_numba and weights.positive
        out = []
        m = weights.matrix
        for start in range(0, len(queries), batch_size):
            batch = queries[start : start + batch_size]
            if use_numba:
                from .impact_kernel import exact_top_k

                q_indptr, q_cols, q_vals = self._query_arrays(batch)
                docs, scores, counts = exact_top_k(m.indptr, m.indices, m.data, self._id_ranks, q_indptr,
                                                   q_cols, q_vals, k)  # fmt: skip
                out.extend(rankings_from_rows([q.id for q in batch], docs, scores, counts, self._names))
            else:
                # float64 products summed in the query's term order: the kernel's sums exactly
                scores = (self.query_matrix(batch) @ m).tocsr()
                out.extend(top_k_sparse_rows([q.id for q in batch], scores, self._names, self._id_ranks, k))
        return out

    def search_arrays(self, queries: Sequence[Query], k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search` with the compiled kernel, as arrays (no Ranking objects): doc indexes
        (queries x k, -1 past a row's hits; doc ``i`` is ``self.doc_ids[i]``), scores, and the
        count of hits per query. Needs numba (extra ``fast``) and positive weights."""
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        require("numba", "fast")
        from .impact_kernel import exact_top_k

        weights = self._weights(None)
        if not weights.positive:
            raise InvalidInput("search_arrays needs positive term weights (use search())")
        m, (q_indptr, q_cols, q_vals) = weights.matrix, self._query_arrays(queries)
        return exact_top_k(m.indptr, m.indices, m.data, self._id_ranks, q_indptr, q_cols, q_vals, k)

    # -- persistence ---------------------------------------------------------------------

    @property
    def params(self) -> dict:
        return {"k1": self.k1, "b": self.b, "variant": self.variant, "analyzer": self.analyzer.config}

    def save(self, path: str | Path) -> None:
        write_index(
            path, self.kind, FORMAT_VERSION, self.params, self.num_docs,
            arrays={
                "indptr": self.indptr, "postings": self.postings, "tfs": self.tfs,
                "doc_lens": self.doc_lens, "doc_ids": self.doc_ids,
            },
            json_files={"vocab": self.vocab},
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | Path, k1: float | None = None, b: float | None = None) -> Self:
        """Open an index; ``k1``/``b`` override the saved values without re-indexing."""
        manifest, arrays, jsons = read_index(path, cls.kind, (FORMAT_VERSION, WEIGHTS_FORMAT_VERSION))
        p = manifest.params
        weights = arrays.pop("weights", None)
        if (k1 is not None and k1 != p["k1"]) or (b is not None and b != p["b"]):
            weights = None  # stored for the saved k1 and b only
        return cls(
            vocab=jsons["vocab"],
            analyzer=Analyzer.from_config(p["analyzer"]),
            k1=p["k1"] if k1 is None else k1,
            b=p["b"] if b is None else b,
            variant=p["variant"],
            weights=weights,
            **arrays,
        )

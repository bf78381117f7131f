"""The impact index's approximate mode, after Seismic (Bruch, Nardini, Rulli, Venturini, SIGIR 2024).

Built once from the posting lists:

1. Static pruning: each term keeps its heaviest postings, ``postings_fraction`` of its list,
   clipped to [``min_postings``, ``max_postings``] (Seismic's ``n_postings``).
2. Blocks: each kept list longer than ``block_size`` is clustered into ceil(n / block_size)
   blocks of similar documents, as Seismic does: random documents of the list as centroids,
   each document to the centroid nearest by its :data:`DOC_CUT` heaviest components. (Blocks
   of consecutive impacts would mix dissimilar documents, whose summaries bound so loosely
   that no block gets skipped.)
3. Summaries: per block, the maximum impact of every term over its documents, cut to the
   heaviest terms holding ``summary_energy`` of its mass and quantized to 8 bits with one
   scale per block; stored by list and term (:func:`summaries_by_term`), so a query reads
   only its own terms' entries of a list's summaries.

At search time (:func:`cascade.retrieval.sparse.seismic_kernel.seismic_top_k`) only the ``query_terms``
query terms that can add the most (weight x maximum impact) are followed; a block is
skipped when its summary's dot product with the query is below ``heap_factor`` x the
current k-th score; the documents of the other blocks are scored exactly through a
forward index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cascade.retrieval.errors import InvalidInput

from .impact_search import Postings
from .vectors import id_dtype

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApproxParams:
    """Seismic-style approximation knobs (the first four shape the index, the last two the search).

    Args:
        postings_fraction: static pruning: the share of each term's list kept, heaviest first.
        min_postings: a kept list holds at least this many postings (or all it has).
        max_postings: and at most this many (Seismic's ``n_postings``).
        block_size: documents per block on average (lists up to this long are one block).
        summary_energy: share of a block summary's L1 mass kept (1: summaries bound the block).
        query_terms: query term cut: only the lists of the query terms with the largest
            weight x maximum impact are read (the weight alone is flat for bag-of-words queries).
        heap_factor: a block is read when its summary score reaches this x the k-th best score
            so far (lower: more blocks read, higher recall).
    """

    # Defaults chosen on a corpus large enough for skipping to pay (SciFact replicated 40x,
    # ``cascade bench sparse --opt scale=40``); on small corpora exact search is the faster
    # mode. Recall and speed figures: eval/benchmarks/RESULTS.md.
    postings_fraction: float = 1.0
    min_postings: int = 64
    max_postings: int = 1000
    block_size: int = 10
    summary_energy: float = 0.9
    query_terms: int = 5
    heap_factor: float = 0.9

    def __post_init__(self):
        if not 0 < self.postings_fraction <= 1 or not 1 <= self.min_postings <= self.max_postings:
            raise InvalidInput("postings_fraction must be in (0, 1] and 1 <= min_postings <= max_postings")
        if self.block_size < 1 or not 0 < self.summary_energy <= 1:
            raise InvalidInput("block_size must be >= 1 and summary_energy in (0, 1]")
        if self.query_terms < 1 or not 0 < self.heap_factor <= 1:
            raise InvalidInput("query_terms must be >= 1 and heap_factor in (0, 1]")

    def search_only(self, other: ApproxParams) -> ApproxParams:
        """These build parameters with ``other``'s search parameters (query_terms, heap_factor)."""
        return ApproxParams(**{**self.__dict__, "query_terms": other.query_terms, "heap_factor": other.heap_factor})


#: Arrays of the approximate mode, saved with the index.
BLOCK_ARRAYS = ("term_blocks", "block_ptr", "block_docs", "summary_list_cols", "summary_col_terms",
                "summary_col_ptr", "summary_col_blocks", "summary_col_values", "summary_scale")  # fmt: skip


def term_ranks(full: Postings) -> tuple[np.ndarray, np.ndarray]:
    """Postings ordered by term, impact descending, doc ascending; and each one's rank in its term."""
    term = np.repeat(np.arange(len(full.indptr) - 1), np.diff(full.indptr))
    order = np.lexsort((full.docs, -full.impacts.astype(np.int64), term))
    return order, np.arange(len(order)) - full.indptr[term[order]]


#: Components of each document compared with the centroids when lists are clustered (Seismic's
#: ``doc_cut``): the heaviest ones decide the nearest centroid at a fraction of a full dot product.
DOC_CUT = 15


def top_components(forward: Postings, n: int = DOC_CUT) -> tuple[np.ndarray, np.ndarray]:
    """Each document's ``n`` heaviest (term, impact) pairs as (docs x n) arrays, zero-padded."""
    n_docs = len(forward.indptr) - 1
    order, rank = term_ranks(forward)  # rows here are documents: their terms, heaviest first
    keep = order[rank < n]
    rows = np.repeat(np.arange(n_docs), np.diff(forward.indptr))[keep]
    terms, values = np.zeros((n_docs, n), dtype=np.int64), np.zeros((n_docs, n))
    terms[rows, rank[rank < n]] = forward.docs[keep]
    values[rows, rank[rank < n]] = forward.impacts[keep]
    return terms, values


def build_blocks(full: Postings, forward: Postings, params: ApproxParams,
                 ranks: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """The pruned, clustered lists and their summaries (:data:`BLOCK_ARRAYS`).

    Args:
        full: the index's posting lists (term -> docs ascending).
        forward: the same impacts by document (doc -> terms ascending).
        params: the pruning and blocking parameters.
        ranks: :func:`term_ranks` of ``full`` when the caller has it already.
    """
    from cascade.retrieval.compiled import AVAILABLE

    from .seismic_kernel import block_summaries, cluster_lists

    if not AVAILABLE:
        log.warning("numba is not installed: blocks are clustered in plain Python (slow); "
                    "pip install 'cascade-search[fast]'")  # fmt: skip
    lengths = np.diff(full.indptr)
    kept = np.minimum(lengths, np.clip(np.ceil(lengths * params.postings_fraction), params.min_postings,
                                       params.max_postings).astype(np.int64))  # fmt: skip
    order, rank = ranks if ranks is not None else term_ranks(full)
    term = np.repeat(np.arange(len(lengths)), lengths)[order]
    sel = rank < kept[term]
    order, term = order[sel], term[sel]  # kept postings, by term then impact
    kept_ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(kept, out=kept_ptr[1:])
    kept_docs = full.docs[order].astype(np.int64)
    top_terms, top_values = top_components(forward)
    cluster = cluster_lists(kept_ptr, kept_docs, forward.indptr, forward.docs, forward.impacts, top_terms,
                            top_values, len(lengths), params.block_size, 0)  # fmt: skip
    # a block per (term, cluster); docs ascending inside, so forward rows are read in memory order
    key = term.astype(np.int64) * (int(cluster.max(initial=0)) + 1) + cluster
    inner = np.lexsort((kept_docs, key))
    key = key[inner]
    block_docs = kept_docs[inner].astype(np.int32)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    block_ptr = np.r_[starts, len(key)].astype(np.int64)
    term_blocks = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.bincount(term[inner][starts], minlength=len(lengths)), out=term_blocks[1:])
    s_ptr, s_terms, s_values, s_scale = block_summaries(
        block_ptr, block_docs, forward.indptr, forward.docs, forward.impacts, len(lengths), params.summary_energy
    )
    log.info("approximate lists: %d of %d postings kept, %d blocks, %d summary entries",
             len(block_docs), len(full.docs), len(block_ptr) - 1, len(s_terms))  # fmt: skip
    return {"term_blocks": term_blocks, "block_ptr": block_ptr, "block_docs": block_docs,
            **summaries_by_term(term_blocks, s_ptr, s_terms, s_values, len(lengths)), "summary_scale": s_scale}


def summaries_by_term(term_blocks: np.ndarray, summary_ptr: np.ndarray, summary_terms: np.ndarray,
                      summary_values: np.ndarray, n_terms: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Each list's block summaries as columns by term (the form search reads: only the
    query's terms), ids in the smallest type that holds them."""
    from .seismic_kernel import summary_columns

    list_cols, col_terms, col_ptr, col_blocks, col_values = summary_columns(
        term_blocks, summary_ptr, summary_terms, summary_values, n_terms
    )
    blocks_per_list = int(np.diff(term_blocks).max(initial=0))
    return {"summary_list_cols": list_cols, "summary_col_terms": col_terms.astype(id_dtype(n_terms)),
            "summary_col_ptr": col_ptr, "summary_col_blocks": col_blocks.astype(id_dtype(blocks_per_list)),
            "summary_col_values": col_values}  # fmt: skip

"""One collection split into parts, searched as if it were one index.

Shards of a sharded index and segments of a writable collection are both *parts*: ordinary
indexes that each hold some of the collection's documents, every document in exactly one
part. Searching them as one index takes three steps, all here:

1. **Global statistics.** A family whose scores depend on the collection (BM25: document
   count, average length, document frequencies) reports each part's statistics
   (:func:`part_stats`, optionally over only the part's live documents) and they are summed
   (:func:`merge_stats`). A family without such statistics (dense, SPLADE, ColBERT) reports
   none, and its parts are scored as they are.
2. **Searching a part** (:func:`search_part`) with those statistics passed in as an argument
   of ``search``: a part's index is shared (by threads, by snapshots) and never changed, so
   the same part can be searched alone or as a piece of any collection at once. Hits a
   filter rejects (deleted or filtered-out documents) are dropped, asking the part for more
   until ``k`` survive.
3. **Merging** each query's per-part top ``k`` (:func:`merge_rankings`) by score, ties by doc
   id, exactly as :meth:`Ranking.from_scores` orders one index's hits. The merge is exact:
   a document lives in one part, and every part is scored with the same statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .base import Retriever
from .types import Query, Ranking


def has_stats(part: Retriever) -> bool:
    """Whether the part's family scores with collection statistics (it has ``collection_stats``)."""
    return hasattr(part, "collection_stats")


def part_stats(part: Retriever, live: np.ndarray | None = None) -> Any | None:
    """One part's collection statistics, or ``None`` for a family that has none.

    Args:
        part: the part's index.
        live: a bool per document in the part's own document order; only those documents
            count (the live documents of a segment). ``None``: all of them.
    """
    if not has_stats(part):
        return None
    return part.collection_stats() if live is None else part.collection_stats(live)


def merge_stats(parts: Sequence[Any | None]) -> Any | None:
    """The whole collection's statistics from every part's (:func:`part_stats`), or ``None``
    when any part has none (a family that needs no statistics)."""
    if not parts or any(p is None for p in parts):
        return None
    return type(parts[0]).merge(parts)


def search_part(
    part: Retriever,
    queries: Sequence[Query],
    k: int,
    stats: Any | None = None,
    keep: Callable[[str], bool] | None = None,
    fetch: int | None = None,
    **kwargs: Any,
) -> list[Ranking]:
    """Each query's top ``k`` in one part, scored with the collection's ``stats``.

    Args:
        part: the part's index; it is only read.
        queries: the queries, in order.
        k: hits kept per query.
        stats: the whole collection's statistics (:func:`merge_stats`), passed to the part's
            ``search``; ``None`` scores the part with its own (or a family without any).
        keep: a doc id filter (deleted or filtered-out documents). A part is then asked for
            ``fetch`` hits, four times as many for the queries that kept fewer than ``k``,
            and so on until ``k`` survive or the part has no more: a filter never makes a
            ranking shorter than it should be.
        fetch: the first request's size when ``keep`` is given; ``k`` by default.
        kwargs: passed to the part's ``search`` (engine, batch size, ...).
    """
    if stats is not None:
        kwargs["stats"] = stats
    if keep is None:
        return part.search(queries, k, **kwargs)
    n = part.num_docs
    fetch = min(n, fetch or k)
    out = [Ranking(q.id, (), ()) for q in queries]
    pending = list(range(len(queries)))
    while pending and fetch > 0:
        rankings = part.search([queries[i] for i in pending], k=fetch, **kwargs)
        still = []
        for i, r in zip(pending, rankings, strict=True):
            kept = [(d, s) for d, s in zip(r.doc_ids, r.scores, strict=True) if keep(d)][:k]
            if len(kept) >= k or len(r) < fetch or fetch >= n:
                out[i] = Ranking(r.query_id, tuple(d for d, _ in kept), tuple(s for _, s in kept))
            else:
                still.append(i)
        pending, fetch = still, min(n, fetch * 4)
    return out


def merge_rankings(queries: Sequence[Query], per_part: Sequence[Sequence[Ranking]], k: int) -> list[Ranking]:
    """Merge each query's per-part top ``k`` into the top ``k`` one index would give: every
    part's hits together, ordered by score (ties by doc id), cut to ``k``.

    Args:
        queries: the queries, in order.
        per_part: for each part, one ranking per query (same order).
        k: hits kept per query.
    """
    merged = []
    for i, q in enumerate(queries):
        ids = [d for rankings in per_part for d in rankings[i].doc_ids]
        scores = [x for rankings in per_part for x in rankings[i].scores]
        merged.append(Ranking.from_scores(q.id, ids, scores, k))
    return merged


def search_parts(
    parts: Sequence[Retriever],
    queries: Sequence[Query],
    k: int,
    stats: Any | None = None,
    threads: int = 1,
    **kwargs: Any,
) -> list[Ranking]:
    """Search every part with the collection's ``stats`` (``threads`` parts at once) and merge."""
    with ThreadPoolExecutor(threads) as pool:
        per_part = list(pool.map(lambda p: search_part(p, queries, k, stats, **kwargs), parts))
    return merge_rankings(queries, per_part, k)

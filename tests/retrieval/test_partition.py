"""Parts of one collection (shards, segments) searched with global statistics answer exactly
as one index over the whole collection, and searching a part never changes the part."""

import numpy as np
import pytest
from collection_data import make_docs, make_queries

from cascade.retrieval.partition import merge_rankings, merge_stats, part_stats, search_part, search_parts
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.types import Query

K = 20


def split(docs, sizes):
    """Consecutive uneven parts, so each part's own statistics differ from the whole's."""
    bounds = np.cumsum([0, *sizes])
    return [docs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.fixture(scope="module")
def corpus():
    docs = make_docs(300)
    queries = [Query(str(i), q) for i, q in enumerate(make_queries(40) + ["gene", "uniqd7 stem"])]
    parts = [BM25Retriever.build(p, show_progress=False) for p in split(docs, (40, 100, 160))]
    return docs, queries, parts


def assert_same(expected, got):
    assert len(expected) == len(got)
    for a, b in zip(expected, got, strict=True):
        assert a.query_id == b.query_id
        assert a.doc_ids == b.doc_ids, a.query_id
        np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-9)


@pytest.mark.parametrize("engine", ["scipy", "auto"])
def test_three_parts_with_global_stats_equal_one_index(corpus, engine):
    docs, queries, parts = corpus
    whole = BM25Retriever.build(docs, show_progress=False).search(queries, k=K, engine=engine)
    stats = merge_stats([part_stats(p) for p in parts])
    assert (stats.num_docs, stats.total_length) == (300, sum(int(p.doc_lens.sum()) for p in parts))
    assert_same(whole, search_parts(parts, queries, K, stats, threads=2, engine=engine))
    # the statistics are what makes it exact: each part's own scores differ from the whole's
    own = search_parts(parts, queries, K, None, engine=engine)
    assert any(a.scores != b.scores for a, b in zip(whole, own, strict=True))


def test_searching_a_part_leaves_its_own_statistics_alone(corpus):
    docs, queries, parts = corpus
    part = parts[0]
    own_stats = part.collection_stats()
    alone_before = part.search(queries, k=K)
    stats = merge_stats([part_stats(p) for p in parts])
    with_global = search_part(part, queries, K, stats)
    assert with_global != alone_before
    assert part.search(queries, k=K) == alone_before
    assert part.collection_stats() == own_stats
    # and alternating keeps answering by the statistics each call passes
    assert search_part(part, queries, K, stats) == with_global
    assert part.search(queries, k=K) == alone_before


def test_deleted_documents_leave_the_statistics_and_the_ranking(corpus):
    """Parts with deleted documents (a collection's segments): statistics over the live
    documents only and a filter on the hits give exactly one fresh index over what is left."""
    docs, queries, parts = corpus
    dead = {d.id for d in docs if d.metadata["n"] % 3 == 0 or d.metadata["group"] == 1}
    live_docs = [d for d in docs if d.id not in dead]
    expected = BM25Retriever.build(live_docs, show_progress=False).search(queries, k=K)

    masks = [np.array([d not in dead for d in p.doc_ids.tolist()]) for p in parts]
    stats = merge_stats([part_stats(p, m) for p, m in zip(parts, masks, strict=True)])
    assert stats.num_docs == len(live_docs)
    per_part = [
        search_part(p, queries, K, stats, keep=lambda d: d not in dead, fetch=K + int((~m).sum()))
        for p, m in zip(parts, masks, strict=True)
    ]
    assert_same(expected, merge_rankings(queries, per_part, K))

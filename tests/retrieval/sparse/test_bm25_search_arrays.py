"""``BM25Retriever.search_arrays``: the rankings of ``search`` as arrays."""

import numpy as np
import pytest
from conftest import TOY_DOCS, TOY_QUERIES

pytest.importorskip("numba")


def test_search_arrays_equals_search():
    from cascade.retrieval.errors import InvalidInput
    from cascade.retrieval.sparse.bm25 import BM25Retriever
    from cascade.retrieval.types import Document, Query

    docs = [Document(d["_id"], d["text"], d["title"]) for d in TOY_DOCS]
    queries = [Query(q["_id"], q["text"]) for q in TOY_QUERIES] + [Query("q3", "nothing matches zzz")]
    index = BM25Retriever.build(docs, show_progress=False)
    for k in (1, 3, 10):
        rankings = index.search(queries, k=k)
        idx, scores, counts = index.search_arrays(queries, k=k)
        assert idx.shape == (3, k) and counts.tolist() == [len(r.doc_ids) for r in rankings]
        for r, row, s, c in zip(rankings, idx, scores, counts, strict=True):
            assert [index.doc_ids[i] for i in row[:c]] == list(r.doc_ids)
            np.testing.assert_array_equal(s[:c], r.scores)
            assert (row[c:] == -1).all()
    with pytest.raises(InvalidInput):
        index.search_arrays(queries, k=0)

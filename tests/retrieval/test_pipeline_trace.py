"""``Pipeline.search(..., trace=True)``: every stage's lists, named as the timings are, and each
hit's rank per stage; without it the output is the same and carries no stages."""

from cascade.retrieval.pipeline import Pipeline, PipelineSpec
from cascade.retrieval.types import Document, Query, Ranking


class Fixed:
    """A retriever answering every query with one fixed order."""

    def __init__(self, ids):
        self.ids = ids

    def search(self, queries, k=10, **_):
        return [
            Ranking(q.id, tuple(self.ids[:k]), tuple(float(-i) for i in range(min(k, len(self.ids)))))
            for q in queries
        ]


class Reverse:
    """A reranker that reverses its candidates."""

    def rerank_batch(self, queries, candidates, top_k=None):
        return [
            Ranking(q.id, tuple(d.id for d in reversed(c)), tuple(float(len(c) - i) for i in range(len(c))))
            for q, c in zip(queries, candidates, strict=True)
        ]


class Docs:
    def get_many(self, ids):
        return [Document(i, i) for i in ids]


def pipeline():
    spec = PipelineSpec.parse({
        "retrievers": [{"retriever": "bm25", "depth": 4}, {"retriever": "bm25", "depth": 2}],
        "fusion": {"method": "rrf", "k": 0},
        "rerankers": [{"reranker": "x", "depth": 3}],
    })  # fmt: skip
    return Pipeline(spec, [Fixed(["a", "b", "c", "d"]), Fixed(["c", "e"])], [Reverse()], Docs())


def test_trace_records_each_stage_in_order():
    out = pipeline().search([Query("q", "text")], k=5, trace=True)
    names = [n for n, _ in out.stages]
    assert names == ["retrieve:bm25", "retrieve:bm25#2", "fuse:rrf", "rerank:x"]
    # RRF with k=0: c = 1/3 + 1/1, a = 1, b = 1/2, e = 1/2, d = 1/4 (b before e: the id tie-break)
    assert out.stages[2][1][0].doc_ids == ("c", "a", "b", "e", "d")
    # the reranker reversed the top 3 and left the rest beneath them
    assert out.rankings[0].doc_ids == ("b", "a", "c", "e", "d")
    ranks = out.stage_ranks(0, out.rankings[0].doc_ids)
    assert ranks[0] == {"retrieve:bm25": 2, "fuse:rrf": 3, "rerank:x": 1}
    assert ranks[2] == {"retrieve:bm25": 3, "retrieve:bm25#2": 1, "fuse:rrf": 1, "rerank:x": 3}
    assert ranks[3] == {"retrieve:bm25#2": 2, "fuse:rrf": 4, "rerank:x": 4}
    assert set(out.timings_s) == {"retrieve:bm25", "fuse:rrf", "rerank:x"}


def test_without_trace_the_output_is_the_same_and_has_no_stages():
    plain = pipeline().search([Query("q", "text")], k=5)
    traced = pipeline().search([Query("q", "text")], k=5, trace=True)
    assert plain.stages is None and plain.stage_ranks(0, ["a"]) == [{}]
    assert plain.rankings == traced.rankings

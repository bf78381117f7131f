"""Qdrant-style ``prefetch`` on ``/v1/search``: the same results as the equivalent pipeline spec,
Qdrant's RRF and DBSF arithmetic, per-prefetch filters, rerank stages, and clear 422s."""

import json

import numpy as np
import pytest
from collection_data import make_docs
from fastapi.testclient import TestClient

from cascade.api.app import create_app
from cascade.api.service.prefetch import compile_prefetch
from cascade.api.settings import Settings
from cascade.rerank.base import Reranker
from cascade.rerank.registry import RERANKERS
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.pipeline import PipelineSpec

WIDE = {"k1": 1.5, "b": 0.9}
TWO_BM25 = {"retrievers": [{"retriever": "bm25"}, {"retriever": "bm25", "params": WIDE}]}
Q = "stem cell heart blood w1 w7"


def _docs_json(docs):
    return [{"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)} for d in docs]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("prefetch"), background_compaction=False))
    with TestClient(app) as c:
        r = c.post("/v1/collections", json={"name": "two", "pipeline": TWO_BM25})
        assert r.status_code == 201, r.text
        docs = _docs_json(make_docs(80))
        for part in (docs[:50], docs[50:]):  # two segments
            assert c.post("/v1/collections/two/documents", json={"documents": part}).status_code == 200
        assert c.post("/v1/collections", json={"name": "one", "pipeline": "bm25"}).status_code == 201
        assert c.post("/v1/collections/one/documents", json=docs[:30]).status_code == 200
        yield c


def search(c, body, status=200):
    r = c.post("/v1/search", json=body)
    assert r.status_code == status, r.text
    return r.json()


def hits(out, q=0):
    return [(h["id"], h["score"]) for h in out["results"][q]["hits"]]


def leaf(index_params, limit, **kw):
    return {"query": Q, "using": "bm25", "index_params": index_params, "limit": limit, **kw}


def single(c, params, depth, filter_=None, k=None):
    """One stage alone, as a plain pipeline: its ranked list (chunk ids and scores)."""
    spec = {"retrievers": [{"retriever": "bm25", "depth": depth, "params": params}], "k": depth}
    return hits(search(c, {"collection": "two", "query": Q, "pipeline": spec, "k": k or depth, "filter": filter_}))


@pytest.mark.parametrize(
    "query, fusion",
    [
        ({"fusion": "rrf"}, {"method": "rrf", "k": 1}),  # Qdrant's k=2 with zero-based ranks
        ({"rrf": {"k": 60}}, {"method": "rrf", "k": 59}),
        ({"fusion": "dbsf"}, {"method": "dbsf"}),
        ({"fusion": "zscore"}, {"method": "zscore"}),
        ({"fusion": "minmax"}, {"method": "minmax"}),
    ],
)
def test_prefetch_equals_the_equivalent_pipeline(client, query, fusion):
    body = {"collection": "two", "prefetch": [leaf({}, 20), leaf(WIDE, 15)], "query": query, "limit": 8}
    got = search(client, body)
    spec = {
        "retrievers": [{"retriever": "bm25", "depth": 20}, {"retriever": "bm25", "depth": 15, "params": WIDE}],
        "fusion": fusion,
        "k": 8,
    }
    want = search(client, {"collection": "two", "query": Q, "pipeline": spec, "k": 8})
    assert got["pipeline"] == "prefetch" and len(hits(got)) == 8
    assert hits(got) == hits(want) and got["results"] == want["results"]


def test_rrf_and_dbsf_scores_are_qdrants(client):
    a, b = single(client, {}, 20), single(client, WIDE, 15)
    # RRF: sum of w / (k + rank), ranks from 0, Qdrant's default k = 2; weights as given
    body = {"collection": "two", "prefetch": [leaf({}, 20), leaf(WIDE, 15)], "limit": 10}
    got = dict(hits(search(client, {**body, "query": {"rrf": {"weights": [1.0, 0.5]}}})))
    want: dict[str, float] = {}
    for ranked, w in ((a, 1.0), (b, 0.5)):
        for rank, (doc, _) in enumerate(ranked):
            want[doc] = want.get(doc, 0.0) + w / (2 + rank)
    assert got == pytest.approx({d: want[d] for d in got})
    assert sorted(got.values(), reverse=True) == sorted(want.values(), reverse=True)[:10]
    # DBSF: mean -/+ 3 sample sd onto 0..1 per list, summed; a missing document adds nothing
    got = dict(hits(search(client, {**body, "query": {"fusion": "dbsf"}})))
    want = {}
    for ranked in (a, b):
        x = np.array([s for _, s in ranked])
        lo, hi = x.mean() - 3 * x.std(ddof=1), x.mean() + 3 * x.std(ddof=1)
        for (doc, _), s in zip(ranked, (x - lo) / (hi - lo), strict=True):
            want[doc] = want.get(doc, 0.0) + s
    assert got == pytest.approx({d: want[d] for d in got})
    assert sorted(got.values(), reverse=True) == pytest.approx(sorted(want.values(), reverse=True)[:10])


def test_per_prefetch_filters_hold_for_their_retriever_only(client):
    group1 = {"group": 1}
    top = {"n": {"$lt": 60}}
    body = {
        "collection": "two",
        "prefetch": [leaf({}, 10, filter=group1), leaf(WIDE, 10)],
        "query": {"rrf": {"k": 61}},
        "limit": 12,
        "filter": top,
        "fields": ["metadata"],
    }
    out = search(client, body)
    meta = {h["id"]: h["metadata"] for h in out["results"][0]["hits"]}
    assert meta and all(m["n"] < 60 for m in meta.values())
    assert any(m["group"] != 1 for m in meta.values())  # the second prefetch is not filtered by group
    # exactly RRF over the two lists, each searched with its own filter (and the top-level one)
    a = single(client, {}, 10, {"$and": [top, group1]})
    b = single(client, WIDE, 10, top)
    want: dict[str, float] = {}
    for ranked in (a, b):
        for rank, (doc, _) in enumerate(ranked):
            want[doc] = want.get(doc, 0.0) + 1 / (61 + rank)
    assert dict(hits(out)) == pytest.approx({d: want[d] for d in meta})
    assert [s for _, s in hits(out)] == pytest.approx(sorted(want.values(), reverse=True)[:12])
    # a filter on a fused prefetch holds for every retriever beneath it, ANDed with theirs
    nested = {
        "collection": "two",
        "prefetch": {"prefetch": [leaf({}, 10, filter={"group": 2}), leaf(WIDE, 10)], "query": {"fusion": "rrf"},
                     "filter": {"n": {"$gte": 20}}, "limit": 30},  # fmt: skip
        "limit": 5,
        "fields": ["metadata"],
    }
    got = search(client, nested)["results"][0]["hits"]
    assert got and all(h["metadata"]["n"] >= 20 for h in got)
    plan = compile_prefetch(
        [_Obj(**nested["prefetch"])], None, 5, PipelineSpec.parse(TWO_BM25)
    )
    assert plan.stage_where == [{"$and": [{"n": {"$gte": 20}}, {"group": 2}]}, {"n": {"$gte": 20}}]
    assert plan.k == 5 and plan.spec.retrievers[0].depth == 10


class _Obj:
    """A prefetch as plain attributes (what the request model gives compile_prefetch)."""

    def __init__(self, prefetch=None, **kw):
        prefetch = [prefetch] if isinstance(prefetch, dict | _Obj) else prefetch or []
        self.prefetch = [p if isinstance(p, _Obj) else _Obj(**p) for p in prefetch]
        for k, v in kw.items():
            setattr(self, k, v)

    def __getattr__(self, name):
        return None


def test_single_prefetch_and_text_at_the_top(client):
    # {"query": TEXT, "prefetch": ONE}: the retriever the prefetch names, with the request's text
    out = search(client, {"collection": "one", "query": "uniqd7 stem w1", "prefetch": {"limit": 50}, "k": 3})
    assert out["results"][0]["hits"][0]["doc_id"] == "d7" and len(hits(out)) == 3
    # a pass-through's limit caps its prefetch's
    out = search(client, {"collection": "one", "query": "stem", "prefetch": {"prefetch": {"limit": 2}}, "k": 5})
    assert len(hits(out)) == 2
    # batches: the same list of texts everywhere
    out = search(client, {"collection": "one", "query": ["uniqd1", "uniqd2"], "prefetch": [{"using": "bm25"}], "k": 1})
    assert [r["hits"][0]["doc_id"] for r in out["results"]] == ["d1", "d2"]
    # with_payload is Qdrant's fields switch; limit is k
    out = search(client, {"collection": "one", "query": "uniqd3", "prefetch": {}, "limit": 1, "with_payload": False})
    assert out["results"][0]["hits"][0].keys() == {"id", "doc_id", "score"}


class OverlapReranker(Reranker):
    """Scores a document by how many query words it contains."""

    def score(self, query, docs):
        words = set(query.lower().split())
        return np.array([len(words & set(d.text.lower().split())) for d in docs], dtype=float)


def test_rerank_stages_over_a_fusion(client, monkeypatch):
    monkeypatch.setitem(RERANKERS._entries, "overlap", OverlapReranker)
    body = {
        "collection": "two",
        "prefetch": {"prefetch": [leaf({}, 30), leaf(WIDE, 30)], "query": {"fusion": "dbsf"}, "limit": 20},
        "query": {"rerank": "overlap"},
        "limit": 6,
    }
    got = search(client, body)
    spec = {
        "retrievers": [{"retriever": "bm25", "depth": 30}, {"retriever": "bm25", "depth": 30, "params": WIDE}],
        "fusion": {"method": "dbsf"},
        "rerankers": [{"reranker": "overlap", "depth": 20}],
        "k": 6,
    }
    want = search(client, {"collection": "two", "query": Q, "pipeline": spec, "k": 6})
    assert got["results"] == want["results"] and "rerank:overlap" in got["timings_ms"]
    # a cascade: the inner rerank stage reads 20, the outer one the inner's 10
    two = {**body, "prefetch": {**body, "limit": 10, "collection": None}, "query": {"rerank": {"reranker": "overlap"}}}
    del two["prefetch"]["collection"]
    plan = compile_prefetch([_Obj(**two["prefetch"])], two["query"], 6, PipelineSpec.parse(TWO_BM25))
    assert [(s.reranker, s.depth) for s in plan.spec.rerankers] == [("overlap", 20), ("overlap", 10)]
    assert search(client, two)["results"][0]["hits"]


@pytest.mark.parametrize(
    "body, status, pattern",
    [
        ({"pipeline": "bm25", "prefetch": [{"using": "bm25"}], "query": "x"}, 422, "either pipeline or prefetch, not both"),
        ({"prefetch": [{"query": "a", "using": "bm25", "index_params": {}}, {"query": "b", "using": "bm25", "index_params": {}}],
          "query": {"fusion": "rrf"}}, 422, "prefetch.1.query: Cascade runs every retriever on the same query text"),
        ({"prefetch": [{"query": "a", "using": "bm25", "index_params": {}}] * 2}, 422, "several prefetches need a \"query\""),
        ({"query": "a", "prefetch": [{"using": "bm25"}]}, 422, "this collection holds 2 bm25 indexes"),
        ({"query": "a", "prefetch": [{}, {}], "k": 3, "limit": 3, "query_": 1}, 422, "Extra inputs"),
        ({"prefetch": [{"query": "a", "using": "bm25", "index_params": {}}], "query": {"fusion": "borda"}}, 422,
         "unknown fusion 'borda'; valid: rrf, dbsf, zscore, minmax"),
        ({"prefetch": [{"query": "a", "using": "bm25", "index_params": {}}], "query": {"rrf": {"k": 0}}}, 422,
         "query.rrf.k: expected an integer >= 1"),
        ({"prefetch": [{"query": "a", "using": "bm25", "index_params": {}}] * 2, "query": {"rrf": {"weights": [1]}}}, 422,
         "expected 2 numbers >= 0, one per prefetch"),
        ({"prefetch": [{"query": "a", "using": "bm25", "index_params": {}}] * 2, "query": {"rerank": "overlap"}}, 422,
         "a rerank stage reads one prefetch, got 2"),
        ({"prefetch": [{"prefetch": [{"query": "a", "using": "bm25", "index_params": {}}] * 2, "query": {"fusion": "rrf"}},
                       {"query": "a", "using": "bm25", "index_params": {}}], "query": {"fusion": "rrf"}}, 422,
         "prefetch.0: Cascade fuses once"),
        ({"prefetch": [{"query": "a", "using": "bm25", "index_params": {}, "score_threshold": 0.5}]}, 422,
         "Qdrant's 'score_threshold' is not supported"),
        ({"prefetch": [{"query": "a", "using": "dense"}]}, 409, "has no dense index"),
        ({"prefetch": [{"using": "bm25", "index_params": {}}]}, 422, "give the query text"),
        ({"query": {"fusion": "rrf"}}, 422, "goes with prefetch"),
        ({"query": "a", "k": 3, "limit": 4}, 422, "k and limit are one setting"),
        ({"query": "a", "prefetch": [{"query": "a", "using": "bm25", "index_params": {}, "prefetch": []}]}, 422,
         "prefetch.0.prefetch"),
        ({"query": "a", "prefetch": {"using": "bm25", "index_params": {}, "limit": 20_000}}, 422, "prefetch.0.limit"),
    ],
)  # fmt: skip
def test_bad_prefetch_requests(client, body, status, pattern):
    r = client.post("/v1/search", json={"collection": "two", **body})
    assert r.status_code == status, r.text
    assert pattern in r.json()["error"]["message"], r.json()


def test_compile_maps_onto_one_pipeline():
    coll = PipelineSpec.parse({"retrievers": [{"retriever": "bm25", "search": {"engine": "x"}}]})
    plan = compile_prefetch([_Obj(limit=7, params={"batch": 2})], "q", 10, coll)
    stage = plan.spec.retrievers[0]
    assert (stage.retriever, stage.depth, stage.params, stage.search) == ("bm25", 7, {}, {"engine": "x", "batch": 2})
    # one prefetch under the request: its limit caps the hits, as in Qdrant
    assert (plan.texts, plan.k, plan.stage_where, plan.spec.rerankers) == (["q"], 7, None, [])
    with pytest.raises(InvalidInput, match="nested deeper than 8"):
        node = _Obj(query="q")
        for _ in range(10):
            node = _Obj(prefetch=[node], query={"rerank": "x"})
        compile_prefetch([node], None, 5, coll)


def test_dense_and_bm25_prefetch_equals_the_hybrid_pipeline(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    from dense_models import tiny_st_dir

    model = str(tiny_st_dir())
    hybrid = {"retrievers": [{"retriever": "bm25"}, {"retriever": "dense", "params": {"model": model}}],
              "fusion": {"method": "minmax"}}  # fmt: skip
    app = create_app(Settings(data_dir=tmp_path, background_compaction=False))
    with TestClient(app) as c:
        assert c.post("/v1/collections", json={"name": "h", "pipeline": hybrid}).status_code == 201
        docs = [{**d, "year": 2000 + i} for i, d in enumerate(_docs_json(make_docs(30)))]
        for d in docs:
            d["metadata"] = {}
        r = c.post("/v1/collections/h/documents", content=json.dumps(docs), headers={"content-type": "text/plain"})
        assert r.status_code == 200 and r.json()["added"] == 30, r.text
        body = {"collection": "h", "query": Q, "k": 5,
                "prefetch": [{"using": "bm25", "limit": 20}, {"using": "dense", "limit": 20, "filter": {"year": {"$gte": 2010}}}]}  # fmt: skip
        for fusion in ("rrf", "dbsf"):
            got = search(c, {**body, "query": {"fusion": fusion}, "prefetch": [{**p, "query": Q} for p in body["prefetch"]]})
            spec = {"retrievers": [{"retriever": "bm25", "depth": 20},
                                   {"retriever": "dense", "depth": 20, "params": {"model": model}}],
                    "fusion": {"method": fusion, **({"k": 1} if fusion == "rrf" else {})}, "k": 5}  # fmt: skip
            assert got["results"][0]["hits"]
            if fusion == "rrf":
                # the dense prefetch's filter: equal to the pipeline only when nothing is filtered out
                plain = {**body, "query": {"fusion": fusion},
                         "prefetch": [{"using": "bm25", "limit": 20, "query": Q},
                                      {"using": "dense", "limit": 20, "query": Q}]}  # fmt: skip
                want = search(c, {"collection": "h", "query": Q, "pipeline": spec, "k": 5})
                assert search(c, plain)["results"] == want["results"]
            meta = {d["id"]: d["year"] for d in docs}
            dense_only = search(c, {"collection": "h", "query": Q, "k": 20, "fields": [],
                                    "prefetch": {"using": "dense", "limit": 20, "filter": {"year": {"$gte": 2010}}}})  # fmt: skip
            assert all(meta[h["doc_id"]] >= 2010 for h in dense_only["results"][0]["hits"])


def test_dbsf_edge_cases():
    from cascade.retrieval.fusion import fuse
    from cascade.retrieval.types import Ranking

    one = Ranking("q", ("a",), (7.0,))  # one hit: 0.5
    flat = Ranking("q", ("b", "c"), (3.0, 3.0))  # no spread: 0.5 each
    spread = Ranking("q", ("a", "b", "d"), (3.0, 2.0, 1.0))  # mean 2, sample sd 1: (x + 1) / 6
    fused = fuse([one, flat, spread], "dbsf", weights=[1.0, 1.0, 2.0])
    got = dict(zip(fused.doc_ids, fused.scores, strict=True))
    assert got == pytest.approx({"a": 0.5 + 2 * 4 / 6, "b": 0.5 + 2 * 3 / 6, "c": 0.5, "d": 2 * 2 / 6})
    assert fused.doc_ids == ("a", "b", "d", "c")
    assert fuse([Ranking("q", (), ()), one], "dbsf").doc_ids == ("a",)

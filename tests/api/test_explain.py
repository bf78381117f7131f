"""``"explain": true`` on /v1/search: each hit's rank at every stage, checked against ranks
computed here from plain searches (BM25 lists, RRF by hand, the reranker's own order)."""

import numpy as np
import pytest
from collection_data import make_docs
from fastapi.testclient import TestClient

from cascade.api.app import create_app
from cascade.api.settings import Settings
from cascade.rerank.base import Reranker
from cascade.rerank.registry import RERANKERS


class OverlapReranker(Reranker):
    """Scores a document by how many query words it contains."""

    def score(self, query, docs):
        words = set(query.lower().split())
        return np.array([len(words & set(d.text.lower().split())) for d in docs], dtype=float)


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setitem(RERANKERS._entries, "overlap", OverlapReranker)
    app = create_app(Settings(data_dir=tmp_path, background_compaction=False))
    with TestClient(app) as c:
        assert c.post("/v1/collections", json={"name": "docs", "pipeline": "bm25"}).status_code == 201
        docs = [{"id": d.id, "text": d.text, "title": d.title} for d in make_docs(60)]
        assert c.post("/v1/collections/docs/documents", json={"documents": docs}).json()["added"] == 60
        yield c


QUERY = "w1 w2 w3 stem cell"
SPEC = {
    "retrievers": [{"retriever": "bm25", "depth": 20}, {"retriever": "bm25", "depth": 5}],
    "fusion": {"method": "rrf", "k": 60},
    "rerankers": [{"reranker": "overlap", "depth": 10}],
}


def test_explain_gives_each_hits_rank_per_stage(client):
    plain = client.post(
        "/v1/search", json={"collection": "docs", "query": QUERY, "k": 20, "fields": []}
    ).json()
    bm25 = [h["id"] for h in plain["results"][0]["hits"]]
    assert len(bm25) == 20
    # RRF by hand over the two BM25 lists (depth 20 and 5), ranks from 1 as in the pipeline
    rrf = {d: 1 / (60 + r) + (1 / (60 + r) if r <= 5 else 0) for r, d in enumerate(bm25, start=1)}
    fused = sorted(rrf, key=lambda d: -rrf[d])

    body = {"collection": "docs", "query": QUERY, "pipeline": SPEC, "k": 6, "explain": True}
    out = client.post("/v1/search", json=body).json()
    assert out["stages"] == ["retrieve:bm25", "retrieve:bm25#2", "fuse:rrf", "rerank:overlap"]
    hits = out["results"][0]["hits"]
    assert len(hits) == 6
    for final, h in enumerate(hits, start=1):
        want = {"retrieve:bm25": bm25.index(h["id"]) + 1, "fuse:rrf": fused.index(h["id"]) + 1}
        if bm25.index(h["id"]) < 5:
            want["retrieve:bm25#2"] = bm25.index(h["id"]) + 1
        want["rerank:overlap"] = final
        assert h["ranks"] == want, h
    # the reranker read the fused top 10 only: every hit came from there
    assert all(h["ranks"]["fuse:rrf"] <= 10 for h in hits)
    # and it moved something, so the ranks shown differ between stages
    assert any(h["ranks"]["fuse:rrf"] != h["ranks"]["rerank:overlap"] for h in hits)
    # timings are per family (two BM25 stages share one entry); ranks are per stage
    assert set(out["timings_ms"]) >= {s.partition("#")[0] for s in out["stages"]}


def test_without_explain_the_response_is_unchanged(client):
    body = {"collection": "docs", "query": QUERY, "pipeline": SPEC, "k": 6}
    plain = client.post("/v1/search", json=body).json()
    explained = client.post("/v1/search", json={**body, "explain": True}).json()
    assert "stages" not in plain and all("ranks" not in h for h in plain["results"][0]["hits"])
    for h in explained["results"][0]["hits"]:
        del h["ranks"]
    del explained["stages"]
    plain.pop("timings_ms"), explained.pop("timings_ms")
    assert plain == explained


def test_explain_with_many_queries_and_a_prefetch(client):
    body = {"collection": "docs", "query": ["uniqd7 stem", "uniqd9 gene"], "k": 3, "explain": True}
    out = client.post("/v1/search", json=body).json()
    assert out["stages"] == ["retrieve:bm25"]
    for res in out["results"]:
        assert [h["ranks"] for h in res["hits"]] == [{"retrieve:bm25": r} for r in (1, 2, 3)]
    body = {
        "collection": "docs",
        "prefetch": [
            {"query": "uniqd7 stem", "using": "bm25", "limit": 10},
            {"query": "uniqd7 stem", "limit": 3},
        ],
        "query": {"fusion": "rrf"},
        "limit": 4,
        "explain": True,
    }
    out = client.post("/v1/search", json=body).json()
    assert out["stages"] == ["retrieve:bm25", "retrieve:bm25#2", "fuse:rrf"]
    top = out["results"][0]["hits"][0]
    assert top["doc_id"] == "d7" and top["ranks"] == {"retrieve:bm25": 1, "retrieve:bm25#2": 1, "fuse:rrf": 1}


def test_explain_must_be_a_boolean(client):
    r = client.post("/v1/search", json={"collection": "docs", "query": "stem", "explain": "lots"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "ValidationError"

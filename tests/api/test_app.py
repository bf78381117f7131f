"""The REST API through FastAPI's TestClient: every resource, and bad input of every kind
answered 4xx with a JSON error that says what is wrong, leaving stored data unchanged."""

import json
import sys
import types

import numpy as np
import pytest
from collection_data import make_docs
from fastapi.testclient import TestClient

from cascade.api.app import create_app
from cascade.api.settings import Settings
from cascade.rerank.base import Reranker
from cascade.rerank.registry import RERANKERS

KEYS = {"admin-key-0001": ["*"], "reader-key-0002": ["docs"]}


def doc_json(d):
    return {"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)}


def _client(path):
    app = create_app(Settings(data_dir=path, background_compaction=False, max_request_bytes=256 * 1024))
    c = TestClient(app).__enter__()
    r = c.post("/v1/collections", json={"name": "docs", "pipeline": "bm25", "chunking": {"max_tokens": 512}})
    assert r.status_code == 201, r.text
    r = c.post("/v1/collections/docs/documents", json={"documents": [doc_json(d) for d in make_docs(40)]})
    assert r.json()["added"] == 40
    return c


@pytest.fixture
def client(tmp_path):
    c = _client(tmp_path)
    yield c
    c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One app for the bad-input tests: each asserts that it changed nothing."""
    c = _client(tmp_path_factory.mktemp("shared"))
    yield c
    c.__exit__(None, None, None)


def state(c, name="docs"):
    coll = c.app.state.engine.collection(name)
    return coll.document_ids(), coll.info()


def assert_error(r, status, type_, pattern):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["type"] == type_, body
    assert pattern in body["error"]["message"], body


def test_search_one_and_many_queries(client):
    r = client.post("/v1/search", json={"collection": "docs", "query": "uniqd7", "k": 3})
    assert r.status_code == 200
    out = r.json()
    assert out["pipeline"] == "bm25" and out["results"][0]["hits"][0]["doc_id"] == "d7"
    assert set(out["timings_ms"]) >= {"retrieve:bm25", "fetch", "total"}
    hit = out["results"][0]["hits"][0]
    assert "metadata" not in hit and hit["text"].endswith("uniqd7")
    r = client.post("/v1/search", json={"collection": "docs", "query": ["uniqd1", "uniqd2 stem"], "k": 2,
                                        "fields": ["metadata"], "filter": {"group": {"$in": [1, 2]}}})  # fmt: skip
    res = r.json()["results"]
    assert [r_["hits"][0]["doc_id"] for r_ in res] == ["d1", "d2"]
    assert all(h["metadata"]["group"] in (1, 2) and "text" not in h for r_ in res for h in r_["hits"])
    # an inline pipeline spec works like a preset
    spec = {"retrievers": [{"retriever": "bm25", "depth": 5}], "k": 5}
    r = client.post("/v1/search", json={"collection": "docs", "query": "uniqd3", "pipeline": spec})
    assert r.json()["pipeline"] == "custom" and r.json()["results"][0]["hits"][0]["doc_id"] == "d3"


def test_collection_lifecycle_and_ingest_formats(client):
    assert client.get("/v1/collections").json() == {"collections": ["docs"]}
    r = client.post("/v1/collections", json={"name": "notes", "chunking": {"max_tokens": 64, "overlap": 8}})
    assert r.status_code == 201 and r.json()["config"]["chunking"] == {"max_tokens": 64, "overlap": 8}
    ndjson = (
        "\n".join(json.dumps({"_id": f"n{i}", "text": f"note {i} about hearts"}) for i in range(3)) + "\n"
    )
    r = client.post(
        "/v1/collections/notes/documents", content=ndjson, headers={"content-type": "application/x-ndjson"}
    )
    assert r.json()["added"] == 3
    files = [
        ("files", ("a.txt", b"A plain text file about neurons.", "text/plain")),
        ("files", ("b.md", b"# Markdown\nabout genes", "text/markdown")),
        ("files", ("c.jsonl", b'{"id": "j1", "text": "jsonl line"}\n', "application/jsonl")),
        ("files", ("d.csv", b"id,text,lang\nc1,csv row text,en\n", "text/csv")),
    ]
    r = client.post("/v1/collections/notes/files", files=files)
    assert r.status_code == 200 and r.json()["added"] == 4, r.text
    assert client.get("/v1/collections/notes/documents/c1").json()["metadata"] == {"lang": "en"}
    r = client.post("/v1/search", json={"collection": "notes", "query": "neurons", "k": 1})
    assert r.json()["results"][0]["hits"][0]["doc_id"] == "a.txt"
    # re-sending the same documents changes nothing
    r = client.post(
        "/v1/collections/notes/documents", content=ndjson, headers={"content-type": "application/x-ndjson"}
    )
    assert (r.json()["unchanged"], r.json()["segment"]) == (3, None)
    assert client.post("/v1/collections/notes/delete", json={"ids": ["n0", "n1"]}).json()["deleted"] == 2
    assert client.delete("/v1/collections/notes/documents/n2").json()["deleted"] == 1
    assert client.get("/v1/collections/notes").json()["num_documents"] == 4
    assert client.post("/v1/collections/notes/compact").json()["segments"] == 1
    assert client.delete("/v1/collections/notes").json()["dropped"] is True
    assert_error(client.get("/v1/collections/notes"), 404, "NotFound", "no collection 'notes'")


def test_delete_by_filter(client):
    r = client.post("/v1/collections/docs/delete", json={"filter": {"group": 0, "n": {"$gte": 20}}})
    assert r.json()["deleted"] == 4
    ids, _ = state(client)
    assert ids == sorted(
        d.id for d in make_docs(40) if not (d.metadata["group"] == 0 and d.metadata["n"] >= 20)
    )


BAD_SEARCHES = [
    (
        {"collection": "docs", "query": ""},
        422,
        "ValidationError",
        "query: String should have at least 1 character",
    ),
    ({"collection": "docs", "query": "   "}, 422, "ValidationError", "must not be empty"),
    ({"collection": "docs", "query": "x" * 5000}, 422, "ValidationError", "at most 4096 characters"),
    ({"collection": "docs", "query": ["a"] * 257}, 422, "ValidationError", "at most 256"),
    ({"collection": "docs", "query": []}, 422, "ValidationError", "query"),
    ({"collection": "nope", "query": "x"}, 404, "NotFound", "no collection 'nope'"),
    (
        {"collection": "docs", "query": "x", "pipeline": "nope"},
        404,
        "NotFound",
        "unknown pipeline preset 'nope'",
    ),
    (
        {"collection": "docs", "query": "x", "pipeline": {"retrievers": []}},
        422,
        "InvalidInput",
        "invalid pipeline spec",
    ),
    (
        {"collection": "docs", "query": "x", "pipeline": "bm25-lucene"},
        409,
        "IndexMismatch",
        "no lucene-bm25 index",
    ),
    (
        {"collection": "docs", "query": "x", "k": 0},
        422,
        "ValidationError",
        "k: Input should be greater than or equal to 1",
    ),
    (
        {"collection": "docs", "query": "x", "k": 1001},
        422,
        "ValidationError",
        "k: Input should be less than or equal to 1000",
    ),
    (
        {"collection": "docs", "query": "x", "k": "ten"},
        422,
        "ValidationError",
        "k: Input should be a valid integer",
    ),
    (
        {"collection": "docs", "query": "x", "filter": {"n": {"$regex": "a"}}},
        422,
        "InvalidInput",
        "unknown operator '$regex'",
    ),
    (
        {"collection": "docs", "query": "x", "filter": {"n": {"$gt": "5"}}},
        422,
        "InvalidInput",
        "expected a finite number",
    ),
    ({"collection": "docs", "query": "x", "filter": [1]}, 422, "ValidationError", "filter"),
    ({"collection": "docs", "query": "x", "fields": ["body"]}, 422, "ValidationError", "fields.0"),
    (
        {"collection": "docs", "query": "x", "extra": 1},
        422,
        "ValidationError",
        "extra: Extra inputs are not permitted",
    ),
    ({"query": "x"}, 422, "ValidationError", "collection: Field required"),
]


@pytest.mark.parametrize("body, status, type_, pattern", BAD_SEARCHES)
def test_bad_search_requests(shared, body, status, type_, pattern):
    before = state(shared)
    assert_error(shared.post("/v1/search", json=body), status, type_, pattern)
    assert state(shared) == before


BAD_WRITES = [
    ("post", "/v1/collections/docs/documents", {"content": b"{not json"}, 422, "InvalidInput", "invalid JSON"),
    ("post", "/v1/collections/docs/documents", {"json": {"documents": []}}, 422, "InvalidInput", "non-empty list"),
    ("post", "/v1/collections/docs/documents", {"json": {"documents": [{"id": "z", "title": "t"}]}}, 422,
     "InvalidInput", "documents[0]: text: Field required"),
    ("post", "/v1/collections/docs/documents", {"json": [{"id": "z", "text": "a"}, {"id": "z", "text": "b"}]}, 422,
     "InvalidInput", "duplicate document id 'z'"),
    ("post", "/v1/collections/docs/documents", {"json": [{"id": "d1", "text": "new", "metadata": {"start": 3}}]}, 422,
     "InvalidInput", "reserved"),
    ("post", "/v1/collections/docs/documents", {"content": b'{"id": "z", "text": "ok"}\n{"id": 5\n',
     "headers": {"content-type": "application/x-ndjson"}}, 422, "InvalidInput", "body:2: invalid JSON"),
    ("post", "/v1/collections/docs/documents", {"content": b"a,b", "headers": {"content-type": "text/csv"}}, 422,
     "InvalidInput", "unsupported content type 'text/csv'"),
    ("post", "/v1/collections/docs/documents", {"content": b"x" * 300_000}, 413, "PayloadTooLarge", "over the limit"),
    ("post", "/v1/collections/nope/documents", {"json": [{"id": "z", "text": "a"}]}, 404, "NotFound", "no collection"),
    ("post", "/v1/collections/docs/files", {"files": [("files", ("x.exe", b"MZ", "application/octet-stream"))]}, 422,
     "InvalidInput", "unsupported file type"),
    ("post", "/v1/collections/docs/files", {"files": [("files", ("x.jsonl", b'{"id": 1}\n', "application/jsonl"))]},
     422, "InvalidInput", "x.jsonl:1"),
    ("post", "/v1/collections/docs/delete", {"json": {"filter": {"group": {"$in": 3}}}}, 422, "InvalidInput",
     "expected a list"),
    ("post", "/v1/collections/docs/delete", {"json": {}}, 422, "InvalidInput", "give document ids or a filter"),
    ("post", "/v1/collections", {"json": {"name": "docs"}}, 409, "Conflict", "already exists"),
    ("post", "/v1/collections", {"json": {"name": "../etc"}}, 422, "ValidationError", "name: String should match"),
    ("post", "/v1/collections", {"json": {"name": "n2", "pipeline": "nope"}}, 404, "NotFound", "unknown pipeline preset"),
    ("post", "/v1/collections", {"json": {"name": "n2", "chunking": {"max_tokens": 16, "overlap": 16}}}, 422,
     "InvalidInput", "overlap (16) must be below max_tokens (16)"),
    ("get", "/v1/collections/docs/documents/nope", {}, 404, "NotFound", "no document 'nope'"),
    ("get", "/v1/nothing-here", {}, 404, "HTTPError", "Not Found"),
    ("put", "/v1/search", {}, 405, "HTTPError", "Method Not Allowed"),
]  # fmt: skip


@pytest.mark.parametrize("method, url, kwargs, status, type_, pattern", BAD_WRITES)
def test_bad_writes_change_nothing(shared, method, url, kwargs, status, type_, pattern):
    before = state(shared)
    assert_error(shared.request(method.upper(), url, **kwargs), status, type_, pattern)
    assert state(shared) == before
    assert shared.get("/v1/collections").json() == {"collections": ["docs"]}


def test_api_keys_are_scoped_per_collection(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, api_keys=KEYS, background_compaction=False))
    with TestClient(app) as c:
        admin = {"Authorization": "Bearer admin-key-0001"}
        reader = {"X-API-Key": "reader-key-0002"}
        assert c.post("/v1/collections", json={"name": "docs"}, headers=admin).status_code == 201
        assert c.post("/v1/collections", json={"name": "secret"}, headers=admin).status_code == 201
        body = {"documents": [{"id": "a", "text": "stem cells"}]}
        before = c.app.state.engine.collection("secret").info()
        assert_error(
            c.post("/v1/collections/secret/documents", json=body), 401, "Unauthorized", "missing API key"
        )
        assert_error(c.post("/v1/collections/secret/documents", json=body, headers={"Authorization": "Bearer wrong-key-123"}),
                     401, "Unauthorized", "invalid API key")  # fmt: skip
        assert_error(c.post("/v1/collections/secret/documents", json=body, headers=reader),
                     403, "Forbidden", "may not use collection 'secret'")  # fmt: skip
        assert_error(c.post("/v1/search", json={"collection": "secret", "query": "stem"}, headers=reader),
                     403, "Forbidden", "secret")  # fmt: skip
        assert_error(c.delete("/v1/collections/secret", headers=reader), 403, "Forbidden", "secret")
        assert c.app.state.engine.collection("secret").info() == before
        assert c.get("/v1/collections", headers=reader).json() == {"collections": ["docs"]}
        assert c.post("/v1/collections/docs/documents", json=body, headers=reader).json()["added"] == 1
        assert c.get("/livez").status_code == 200 and c.get("/readyz").json()["status"] == "ready"


def test_request_id_and_metrics(client):
    r = client.get("/livez", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/livez", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert len(generated) == 32 and generated != "bad id with spaces"
    client.post("/v1/search", json={"collection": "docs", "query": "stem"})
    client.post("/v1/search", json={"collection": "docs", "query": ""})
    text = client.get("/metrics").text
    assert 'cascade_requests_total{method="POST",route="/v1/search",status="200"} 1.0' in text
    assert 'cascade_errors_total{route="/v1/search",status="422"} 1.0' in text
    assert 'cascade_stage_latency_seconds_count{stage="retrieve:bm25"} 1.0' in text
    assert 'cascade_request_latency_seconds_bucket{le="10.0",route="/v1/search"} 2.0' in text


def test_unexpected_errors_are_a_json_500_without_details(client, monkeypatch):
    def broken(*a, **k):
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(client.app.state.engine, "search", broken)
    r = client.post(
        "/v1/search", json={"collection": "docs", "query": "stem"}, headers={"X-Request-ID": "rid-9"}
    )
    assert_error(r, 500, "InternalError", "request id rid-9")
    assert "secret" not in r.text


class OverlapReranker(Reranker):
    """Scores a document by how many query words it contains (a real, checkable scorer)."""

    def score(self, query, docs):
        words = set(query.lower().split())
        return np.array([len(words & set(d.text.lower().split())) for d in docs], dtype=float)


def test_rerank_cohere_format(client, monkeypatch):
    body = {
        "model": "overlap",
        "query": "stem cell gene",
        "documents": ["gene", {"text": "stem cell gene"}, "none", "stem gene"],
    }
    installed = RERANKERS.names()
    expected = f"installed: {', '.join(installed)}" if installed else "no reranker is installed"
    assert_error(client.post("/v1/rerank", json=body), 422, "InvalidInput", expected)
    monkeypatch.setitem(RERANKERS._entries, "overlap", OverlapReranker)
    r = client.post("/v1/rerank", json={**body, "top_n": 3, "return_documents": True})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [(x["index"], x["relevance_score"]) for x in res] == [(1, 3.0), (3, 2.0), (0, 1.0)]
    assert res[0]["document"] == {"text": "stem cell gene"}
    assert "document" not in client.post("/v1/rerank", json=body).json()["results"][0]
    assert_error(
        client.post("/v1/rerank", json={**body, "model": "other"}), 422, "InvalidInput", "unknown reranker model 'other'"
    )
    assert_error(
        client.post("/v1/rerank", json={**body, "documents": []}), 422, "ValidationError", "documents"
    )
    # a reranker stage in a search pipeline, found through the same registry
    spec = {
        "retrievers": [{"retriever": "bm25", "depth": 20}],
        "rerankers": [{"reranker": "overlap", "depth": 20}],
    }
    r = client.post("/v1/search", json={"collection": "docs", "query": "w1 w2 w3", "pipeline": spec, "k": 5})
    out = r.json()
    assert "rerank:overlap" in out["timings_ms"]
    scores = [h["score"] for h in out["results"][0]["hits"]]
    texts = [h["text"] for h in out["results"][0]["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert scores == [float(len({"w1", "w2", "w3"} & set(t.split()))) for t in texts]


def test_embeddings_openai_format(client, monkeypatch):
    body = {"model": "sentence-transformers/all-MiniLM-L6-v2", "input": ["stem cells", "blood"]}
    if "cascade.retrieval.encoders.dense" not in sys.modules:
        try:
            import cascade.retrieval.encoders.dense  # noqa: F401
        except ImportError:
            assert_error(client.post("/v1/embeddings", json=body), 501, "MissingDependency", "dense encoder")
    fake = types.ModuleType("cascade.retrieval.encoders.dense")

    class DenseEncoder:  # the dense developer's interface: DenseEncoder(model=...).encode(texts)
        def __init__(self, model, show_progress=True):
            self.model = model

        def encode(self, texts):
            return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    fake.DenseEncoder = DenseEncoder
    monkeypatch.setitem(sys.modules, "cascade.retrieval.encoders.dense", fake)
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "list" and out["model"] == body["model"]
    assert [d["embedding"] for d in out["data"]] == [[10.0, 1.0], [5.0, 1.0]]
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert_error(
        client.post("/v1/embeddings", json={**body, "model": "other"}), 422, "InvalidInput", "not served"
    )
    assert_error(client.post("/v1/embeddings", json={**body, "input": []}), 422, "ValidationError", "input")


def test_context_endpoint_packs_with_citations(client):
    dup = {"id": "dup", "text": make_docs(1)[0].text, "title": "copy"}  # same text as d0
    client.post("/v1/collections/docs/documents", json=[dup])
    r = client.post(
        "/v1/context", json={"collection": "docs", "query": make_docs(1)[0].text, "k": 10, "max_tokens": 200}
    )
    out = r.json()
    assert r.status_code == 200 and out["duplicates_removed"] >= 1
    assert {p["doc_id"] for p in out["passages"]}.isdisjoint(
        {"dup"} if out["passages"][0]["doc_id"] == "d0" else {"d0"}
    )
    assert out["tokens"] <= 200 and out["tokens"] == len(out["context"].split())
    assert [p["marker"] for p in out["passages"]] == list(range(1, len(out["passages"]) + 1))
    assert all(p["start"] == 0 and p["end"] == len(p["text"]) for p in out["passages"])
    assert_error(client.post("/v1/context", json={"collection": "docs", "query": "x", "tokenizer": "gpt-9"}),
                 422, "InvalidInput", "tokenizer 'gpt-9' is not served")  # fmt: skip
    assert_error(client.post("/v1/answer", json={"collection": "docs", "query": "x"}), 501, "MissingDependency",
                 "no LLM is configured")  # fmt: skip

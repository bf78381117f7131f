"""First contact: JSON sent with curl's default content type (``-d`` labels it
``application/x-www-form-urlencoded``) or ``text/plain`` works, anything else under those types
gets a 415 that says what to send; document fields other than id/text/title/metadata become
metadata. Through httpx with the header set explicitly, and through the real ``curl``."""

import json
import shutil
import subprocess

import pytest
from api_helpers import serve
from fastapi.testclient import TestClient

from cascade.api.app import create_app
from cascade.api.settings import Settings

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def client(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, background_compaction=False, max_request_bytes=64 * 1024))
    with TestClient(app) as c:
        yield c


def post(c, url, body, headers=FORM):
    return c.post(url, content=body if isinstance(body, str | bytes) else json.dumps(body), headers=headers)


def error(r, status):
    assert r.status_code == status, r.text
    return r.json()["error"]


def test_json_with_curls_default_content_type(client):
    r = post(client, "/v1/collections", {"name": "notes", "chunking": {"max_tokens": 64}})
    assert r.status_code == 201 and r.json()["config"]["chunking"]["max_tokens"] == 64, r.text
    docs = {"documents": [{"id": "a", "text": "stem cells become neurons", "year": 2021},
                          {"id": "b", "text": "the heart pumps blood", "year": 2018}]}  # fmt: skip
    assert post(client, "/v1/collections/notes/documents", docs).json()["added"] == 2
    # text/plain (fetch's default for a string body) and a charset parameter are read the same way
    r = post(client, "/v1/search", {"collection": "notes", "query": "stem", "k": 3},
             headers={"content-type": "text/plain;charset=UTF-8"})  # fmt: skip
    assert r.status_code == 200 and r.json()["results"][0]["hits"][0]["doc_id"] == "a", r.text
    r = post(client, "/v1/search", {"collection": "notes", "query": "blood", "filter": {"year": {"$lt": 2020}}})
    assert [h["doc_id"] for h in r.json()["results"][0]["hits"]] == ["b"]
    # NDJSON with its newlines (curl --data-binary without a content type) on a documents route
    ndjson = "\n".join(json.dumps({"id": f"n{i}", "text": f"note {i}", "year": 2000 + i}) for i in range(3))
    r = post(client, "/v1/collections/notes/documents", ndjson)
    assert r.status_code == 200 and r.json()["added"] == 3, r.text
    # one document object alone
    r = post(client, "/v1/collections/notes/documents", {"id": "c", "text": "one alone", "lang": "en"})
    assert r.json()["added"] == 1
    assert client.get("/v1/collections/notes/documents/c").json()["metadata"] == {"lang": "en"}
    # real form uploads are untouched
    r = client.post("/v1/collections/notes/files", files=[("files", ("x.jsonl", b'{"id": "f", "text": "t", "k": 1}\n'))])
    assert r.status_code == 200 and client.get("/v1/collections/notes/documents/f").json()["metadata"] == {"k": 1}


def test_a_body_that_is_not_json_gets_a_415_saying_what_to_send(client):
    e = error(post(client, "/v1/collections", "name=notes&pipeline=bm25"), 415)
    assert e["type"] == "UnsupportedMediaType"
    assert "send JSON with the header 'Content-Type: application/json'" in e["message"]
    assert "application/x-www-form-urlencoded" in e["message"] and "NDJSON" not in e["message"]
    assert client.get("/v1/collections").json() == {"collections": []}
    assert post(client, "/v1/collections", {"name": "notes"}).status_code == 201
    # curl -d @docs.jsonl drops the newlines: the documents route says how to send NDJSON
    squashed = "".join(json.dumps({"id": f"n{i}", "text": "x"}) for i in range(2))
    r = post(client, "/v1/collections/notes/documents", squashed)
    e = error(r, 415)
    assert "application/x-ndjson" in e["message"] and "--data-binary" in e["message"]
    assert r.headers["x-request-id"]
    e = error(post(client, "/v1/search", b"\xff\xfe", headers={"content-type": "text/plain"}), 415)
    assert "not UTF-8" in e["message"]
    # an empty body is left to the route; a streamed body over the limit is still a 413
    assert error(post(client, "/v1/search", ""), 422)["type"] == "ValidationError"
    r = client.post("/v1/search", content=(b"x" * 4096 for _ in range(40)), headers=FORM)
    assert error(r, 413)["type"] == "PayloadTooLarge"


def test_extra_document_fields_become_metadata(client):
    assert client.post("/v1/collections", json={"name": "kb"}).status_code == 201
    docs = [
        {"id": "a", "text": "stem cells", "year": 2021, "tags": ["x", "y"], "src": {"kind": "paper"}},
        {"_id": "b", "title": "T", "text": "heart", "year": 2019, "metadata": {"lang": "en", "year": 2019}},
        {"id": "c", "text": "blood", "metadata": {"lang": "de"}, "score": None},
    ]
    assert client.post("/v1/collections/kb/documents", json=docs).json()["added"] == 3
    meta = {d: client.get(f"/v1/collections/kb/documents/{d}").json()["metadata"] for d in "abc"}
    assert meta == {
        "a": {"year": 2021, "tags": ["x", "y"], "src": {"kind": "paper"}},
        "b": {"year": 2019, "lang": "en"},  # the same value both ways is fine
        "c": {"score": None, "lang": "de"},
    }
    r = client.post("/v1/search", json={"collection": "kb", "query": "stem heart blood", "filter": {"year": 2019}})
    assert [h["doc_id"] for h in r.json()["results"][0]["hits"]] == ["b"]
    # NDJSON: the same rule
    ndjson = json.dumps({"id": "d", "text": "neurons", "year": 2024}) + "\n"
    r = client.post("/v1/collections/kb/documents", content=ndjson, headers={"content-type": "application/x-ndjson"})
    assert r.json()["added"] == 1 and client.get("/v1/collections/kb/documents/d").json()["metadata"] == {"year": 2024}
    # a clash with different values, or a key reserved for chunk offsets, is refused; nothing is written
    bad = [
        ({"id": "e", "text": "x", "year": 2021, "metadata": {"year": 2020}},
         "documents[0]: field 'year' is given both as a field and in metadata, with different values"),
        ({"id": "e", "text": "x", "year": 1, "metadata": {"year": True}}, "field 'year' is given both"),
        ({"id": "e", "text": "x", "start": 3}, "field 'start' would become metadata, but parent_id, start, end are reserved"),
        ({"id": "e", "text": "x", "metadata": [1]}, "metadata: Input should be a valid dictionary"),
    ]  # fmt: skip
    for doc, pattern in bad:
        e = error(client.post("/v1/collections/kb/documents", json=[doc]), 422)
        assert pattern in e["message"], e
    r = client.post("/v1/collections/kb/documents", content=json.dumps({"id": "e", "text": "x", "end": 1}) + "\n",
                    headers={"content-type": "application/x-ndjson"})  # fmt: skip
    assert "body:1: field 'end' would become metadata" in error(r, 422)["message"]
    assert client.get("/v1/collections/kb").json()["num_documents"] == 4


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl binary")
def test_the_real_curl_binary(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", background_compaction=False))

    def curl(*args: str) -> dict:
        p = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)  # fmt: skip
        body, _, code = p.stdout.rpartition("\n")
        assert p.returncode == 0, p.stderr
        return {"status": int(code), **json.loads(body)}

    with serve(app) as url:
        out = curl(f"{url}/v1/collections", "-d", '{"name": "notes", "pipeline": "bm25"}')
        assert out["status"] == 201 and out["name"] == "notes"
        docs = [{"id": "d1", "text": "Stem cells differentiate into neurons.", "year": 2021},
                {"id": "d2", "text": "The heart pumps blood.", "year": 2019}]  # fmt: skip
        (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        # -d @file drops the newlines: refused, saying how to send NDJSON
        out = curl(f"{url}/v1/collections/notes/documents", "-d", "@docs.jsonl")
        assert out["status"] == 415 and "--data-binary" in out["error"]["message"]
        out = curl(f"{url}/v1/collections/notes/documents", "--data-binary", "@docs.jsonl")
        assert (out["status"], out["added"]) == (200, 2)
        out = curl(f"{url}/v1/collections/notes/documents", "-d", '{"id": "d3", "text": "Stem cell niches.", "year": 2024}')
        assert (out["status"], out["added"]) == (200, 1)
        out = curl(f"{url}/v1/search", "-d", '{"collection": "notes", "query": "stem cells", "filter": {"year": {"$gte": 2020}}}')
        assert out["status"] == 200 and sorted(h["doc_id"] for h in out["results"][0]["hits"]) == ["d1", "d3"]
        out = curl(f"{url}/v1/search", "-d", "collection=notes&query=stem")
        assert out["status"] == 415 and "Content-Type: application/json" in out["error"]["message"]
        # a form field named like a file upload still goes through multipart
        out = curl(f"{url}/v1/collections/notes/files", "-F", "files=@docs.jsonl")
        assert (out["status"], out["unchanged"]) == (200, 2)

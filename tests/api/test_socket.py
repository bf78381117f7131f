"""The API over real loopback HTTP (uvicorn in a thread, httpx as the client): bad input,
body limits, request ids, streaming answers from a scripted OpenAI-compatible LLM, and
`cascade serve` as a process."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from api_helpers import serve
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from cascade.api.app import create_app
from cascade.api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    {"id": "stem", "title": "Stem cells", "text": "Stem cells can become neurons. They repair tissue."},
    {"id": "heart", "title": "Heart", "text": "The heart pumps blood through the body."},
    {"id": "stem-copy", "title": "Stem cells", "text": "Stem cells can become neurons. They repair tissue."},
]
ANSWER = ["Stem cells ", "become neurons ", "[1]", " and repair tissue [1][7]."]


def fake_llm(seen: list):
    """A scripted chat-completions server: streams ANSWER in OpenAI's SSE chunk format."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        seen.append(await request.json())

        async def events():
            for part in ANSWER:
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': part}}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llm():
    seen: list = []
    with serve(fake_llm(seen)) as url:
        yield url, seen


@pytest.fixture(scope="module")
def api(tmp_path_factory, llm):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), max_request_bytes=64 * 1024,
        llm_base_url=llm[0] + "/v1", llm_model="scripted",
    )  # fmt: skip
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.post("/v1/collections", json={"name": "kb"}).status_code == 201
        assert c.post("/v1/collections/kb/documents", json={"documents": DOCS}).json()["added"] == 3
        yield c


def test_search_and_bad_input_over_a_real_socket(api):
    r = api.post("/v1/search", json={"collection": "kb", "query": "heart blood", "k": 1}, headers={"X-Request-ID": "r-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "r-1"
    assert r.json()["results"][0]["hits"][0]["doc_id"] == "heart"
    before = api.get("/v1/collections/kb").json()
    cases = [
        (dict(content=b'{"collection": "kb", "query": ', headers={"content-type": "application/json"}), 422, "invalid JSON"),
        (dict(json={"collection": "kb", "query": ""}), 422, "query"),
        (dict(json={"collection": "kb", "query": "x", "k": 100000}), 422, "k: Input should be less than or equal to 1000"),
        (dict(json={"collection": "nope", "query": "x"}), 404, "no collection 'nope'"),
        (dict(json={"collection": "kb", "query": "x", "pipeline": "nope"}), 404, "unknown pipeline preset"),
        (dict(json={"collection": "kb", "query": "x", "filter": {"a": {"$gt": []}}}), 422, "expected a finite number"),
        (dict(json={"collection": "kb", "query": "x" * 70_000}), 413, "over the limit"),
    ]  # fmt: skip
    for kwargs, status, pattern in cases:
        r = api.post("/v1/search", **kwargs)
        assert r.status_code == status and pattern in r.json()["error"]["message"], r.text
        assert r.headers["x-request-id"]
    assert api.get("/v1/collections/kb").json() == before


def test_body_limit_from_content_length_and_from_a_chunked_stream(api):
    before = api.get("/v1/collections/kb").json()
    host, port = api.base_url.host, api.base_url.port
    with socket.create_connection((host, port)) as s:  # a declared length over the limit: refused unread
        s.sendall(b"POST /v1/collections/kb/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 999999999\r\n\r\n")  # fmt: skip
        s.settimeout(10)
        reply = b""
        while b"}}" not in reply:
            part = s.recv(4096)
            if not part:
                break
            reply += part
    assert reply.startswith(b"HTTP/1.1 413") and b"PayloadTooLarge" in reply

    def chunks():  # no Content-Length: counted while it streams
        yield b'{"documents": ['
        for i in range(2000):
            yield json.dumps({"id": f"x{i}", "text": "padding " * 10}).encode() + b","
        yield b'{"id": "last", "text": "x"}]}'

    r = api.post("/v1/collections/kb/documents", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"
    assert api.get("/v1/collections/kb").json() == before


def test_answer_streams_from_the_llm_with_citations(api, llm):
    _, seen = llm
    body = {"collection": "kb", "query": "what do stem cells become?", "k": 5}
    with api.stream("POST", "/v1/answer", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events, event = [], None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
                event = None
    assert events[0][0] == "citations"
    passages = events[0][1]["passages"]
    assert [p["doc_id"] for p in passages][:1] in (["stem"], ["stem-copy"])
    assert {"stem", "stem-copy"} - {p["doc_id"] for p in passages}  # the duplicate was removed
    assert passages[0]["marker"] == 1 and (passages[0]["start"], passages[0]["end"]) == (0, len(DOCS[0]["text"]))
    assert [e[1]["delta"] for e in events[1:-1]] == ANSWER
    assert events[-1] == ("done", {"answer": "".join(ANSWER), "cited": [1]})  # [7] is no passage
    sent = seen[-1]
    assert sent["model"] == "scripted" and sent["stream"] is True
    assert "[1] Stem cells\nStem cells can become neurons." in sent["messages"][1]["content"]
    r = api.post("/v1/answer", json={**body, "stream": False})
    assert r.json()["answer"] == "".join(ANSWER) and r.json()["cited"] == [1]


def test_answer_when_the_llm_is_down(tmp_path):
    settings = Settings(data_dir=tmp_path, llm_base_url=f"http://127.0.0.1:{free_port()}/v1", llm_model="m")
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
        c.post("/v1/collections", json={"name": "kb"})
        c.post("/v1/collections/kb/documents", json={"documents": DOCS[:1]})
        r = c.post("/v1/answer", json={"collection": "kb", "query": "stem"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "Unavailable"
        assert "not reachable" in r.json()["error"]["message"]


def test_answer_when_the_llm_refuses(tmp_path):
    refusing = FastAPI()

    @refusing.post("/v1/chat/completions")
    async def chat():
        return JSONResponse({"error": "bad key"}, status_code=401)

    with serve(refusing) as llm_url:
        settings = Settings(data_dir=tmp_path, llm_base_url=llm_url + "/v1", llm_model="m", llm_api_key="k")
        with TestClient(create_app(settings)) as c:
            c.post("/v1/collections", json={"name": "kb"})
            c.post("/v1/collections/kb/documents", json={"documents": DOCS[:1]})
            r = c.post("/v1/answer", json={"collection": "kb", "query": "stem"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "Unavailable"  # the server's fault, not the caller's
    assert "refused the request: HTTP 401" in r.json()["error"]["message"]


def test_cascade_serve_process(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cascade.api.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path),
           "--api-key", "sekrit-key-1:kb"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.2)
        key = {"Authorization": "Bearer sekrit-key-1"}
        assert httpx.post(url + "/v1/collections", json={"name": "kb"}).status_code == 401
        assert httpx.post(url + "/v1/collections", json={"name": "other"}, headers=key).status_code == 403
        assert httpx.post(url + "/v1/collections", json={"name": "kb"}, headers=key).status_code == 201
        assert httpx.get(url + "/openapi.json").json()["info"]["title"] == "Cascade"
    finally:
        proc.terminate()
        proc.wait(20)

"""Operating the service: one writer per data directory (real processes), snapshots from the CLI
and over HTTP, and the limits that protect the server (per-request caps, the bounded queue, the
time limit), all over real HTTP."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from api_helpers import serve
from collection_data import make_docs, make_queries
from live_server import cascade_serve_process

from cascade.api.app import create_app
from cascade.api.settings import Settings
from cascade.eval.presets import resolve_pipeline
from cascade.indexing.index_set import IndexSet

ROOT = Path(__file__).resolve().parents[2]


def cascade(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cascade", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip


def test_one_writer_per_data_directory(tmp_path):
    docs = make_docs(30)
    index = tmp_path / "index"
    IndexSet(index, corpus=lambda: iter(docs)).build(resolve_pipeline("bm25"))
    data = tmp_path / "data"
    with cascade_serve_process(data, "--index", f"idx={index}") as (url, first):
        # a second writer of any kind is refused at start, naming the holder
        for args in (["collection", "create", "c", "--data-dir", str(data)],
                     ["serve", "--data-dir", str(data), "--port", "1"]):  # fmt: skip
            p = cascade(*args)
            assert p.returncode == 2, (args, p.stderr)
            line = p.stderr.strip()
            assert "\n" not in line and line.startswith(f"cascade: error: data directory {data}"), line
            assert line.endswith(
                f"is in use by process {first.pid} (a `cascade serve` or `cascade collection`); stop it first "
                "or use another --data-dir"
            ), line
        # a read-only index directory is shared: a server on another data dir serves it too
        with cascade_serve_process(
            tmp_path / "other", "--index", f"idx={index}", log=tmp_path / "other.log"
        ) as (
            url2,
            _,
        ):
            body = {"collection": "idx", "query": "uniqd7", "k": 1}
            for u in (url, url2):
                assert (
                    httpx.post(u + "/v1/search", json=body, timeout=60).json()["results"][0]["hits"][0][
                        "doc_id"
                    ]
                    == "d7"
                )
        os.kill(first.pid, signal.SIGKILL)  # a crash releases the lock: the OS drops it
        first.wait()
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(f'{{"_id": "{d.id}", "text": "{d.text}"}}\n' for d in docs))
    p = cascade("collection", "create", "c", "--data-dir", str(data), "--corpus", str(corpus), "--json")
    assert p.returncode == 0, p.stderr
    # snapshot and restore from the CLI; a truncated archive is one line and exit 2
    archive, cut = tmp_path / "c.tar", tmp_path / "cut.tar"
    assert (
        cascade("collection", "snapshot", "c", "--data-dir", str(data), "--out", str(archive)).returncode == 0
    )
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    p = cascade("collection", "restore", str(cut), "--name", "c", "--data-dir", str(data))
    assert p.returncode == 2 and p.stderr.startswith(f"cascade: error: snapshot archive {cut} is damaged"), (
        p.stderr
    )
    assert p.stderr.count("\n") == 1
    p = cascade("collection", "restore", str(archive), "--name", "c2", "--data-dir", str(data))
    assert p.returncode == 0, p.stderr
    with cascade_serve_process(data) as (url, _):
        assert httpx.get(url + "/v1/collections", timeout=60).json()["collections"] == ["c", "c2"]
        body = {"collection": "c2", "query": "uniqd7", "k": 1, "fields": ["text"]}
        hit = httpx.post(url + "/v1/search", json=body, timeout=60).json()["results"][0]["hits"][0]
        assert (hit["doc_id"], hit["text"]) == ("d7", docs[7].text)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("limits")
    settings = Settings(
        data_dir=tmp_path / "data", background_compaction=False, max_k=50, max_queries=8, max_depth=300,
        max_document_bytes=2000, max_documents_per_request=40, max_rerank_candidates=20, max_context_tokens=500,
        search_threads=1, max_queued=2, request_timeout_s=3.0,
    )  # fmt: skip
    app = create_app(settings)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for name in ("c", "s1", "s2"):
            docs = [{"id": d.id, "text": d.text} for d in make_docs(40)]
            client.post("/v1/collections", json={"name": name})
            assert (
                client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
            )
        app.state.engine.search("c", ["stem"])  # the first search compiles kernels: not under the time limit
        yield app, client


def test_snapshots_over_http(app_url):
    _, client = app_url
    search = {"collection": "s1", "query": make_queries(5), "k": 5}
    r = client.post("/v1/search", json=search)
    assert r.status_code == 200, r.text
    before = r.json()["results"]
    snap = client.post("/v1/collections/s1/snapshots")
    assert snap.status_code == 201, snap.text
    info = snap.json()
    assert info["collection"] == "s1" and info["num_documents"] == 40 and len(info["sha256"]) == 64
    assert client.get("/v1/collections/s1/snapshots").json()["snapshots"] == [info]
    client.post("/v1/collections/s1/delete", json={"ids": ["d1", "d2", "d3"]})
    r = client.post(f"/v1/collections/s1/snapshots/{info['name']}/restore", json={"name": "copy"})
    assert r.status_code == 200 and r.json()["num_documents"] == 40
    assert client.post(f"/v1/collections/s1/snapshots/{info['name']}/restore").json()["num_documents"] == 40
    for name in ("s1", "copy"):
        assert client.post("/v1/search", json={**search, "collection": name}).json()["results"] == before
    r = client.post("/v1/collections/s1/snapshots/nope/restore")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"


def test_damaged_snapshot_is_refused_over_http(app_url, tmp_path):
    app, client = app_url
    info = client.post("/v1/collections/s2/snapshots").json()
    path = app.state.engine.snapshots.path("s2", info["name"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    client.post("/v1/collections/s2/delete", json={"ids": ["d1"]})
    r = client.post(f"/v1/collections/s2/snapshots/{info['name']}/restore")
    assert r.status_code == 422 and "is damaged" in r.json()["error"]["message"], r.text
    assert client.get("/v1/collections/s2").json()["num_documents"] == 39  # the live collection is untouched


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/search", {"collection": "c", "query": "stem", "k": 51}, 422, "k=51 is over this server's limit of 50"),
        ("/v1/search", {"collection": "c", "query": ["stem"] * 9}, 422, "9 queries in one request; this server's limit is 8"),
        ("/v1/search", {"collection": "c", "query": "stem", "pipeline": {"retrievers": [{"retriever": "bm25", "depth": 301}]}},
         422, "retriever 'bm25' depth 301 is over this server's limit of 300"),
        ("/v1/search", {"collection": "c", "query": "stem", "pipeline": {"retrievers": [{"retriever": "bm25"}],
         "rerankers": [{"reranker": "cross-encoder", "depth": 21}]}}, 422, "reranker 'cross-encoder' depth 21 is over"),
        ("/v1/rerank", {"query": "q", "documents": ["a"] * 21}, 422, "documents to rerank 21 is over this server's limit of 20"),
        ("/rerank", {"query": "q", "texts": ["a"] * 21}, 422, "documents to rerank 21 is over"),
        ("/v1/context", {"collection": "c", "query": "stem", "max_tokens": 501}, 422, "max_tokens=501 is over this server's context limit of 500"),
        ("/v1/context", {"collection": "c", "query": "stem", "k": 60}, 422, "k=60 is over"),
        ("/v1/collections/c/documents", {"documents": [{"id": "big", "text": "w " * 1001}]}, 413, "document 'big' is 2002 bytes"),
        ("/v1/collections/c/documents", {"documents": [{"id": f"x{i}", "text": "t"} for i in range(41)]}, 413, "41 documents in one request"),
    ],
)  # fmt: skip
def test_per_request_caps(app_url, path, body, status, message):
    _, client = app_url
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert client.get("/v1/collections/c").json()["num_documents"] == 40


def test_full_queue_answers_503_with_retry_after_and_slow_search_504(app_url, monkeypatch):
    app, client = app_url
    engine, gate = app.state.engine, threading.Event()
    original = engine.search

    def slow_search(*args, **kwargs):
        gate.wait(20)  # a slow model stage: holds its worker until released
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "search", slow_search)
    body = {"collection": "c", "query": "stem", "k": 3}
    answers = []

    # one running, two queued: the server's capacity (search_threads=1, max_queued=2)
    def send(k: int):  # a client per thread; each its own k, so no two share one batched engine call
        with httpx.Client(base_url=client.base_url, timeout=30) as own:
            answers.append(own.post("/v1/search", json={**body, "k": k}))

    threads = [threading.Thread(target=send, args=(k,)) for k in (4, 5, 6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while getattr(app.state, "search_gate", None) is None or app.state.search_gate.busy < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    r = client.post("/v1/search", json=body)
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.json()["error"]["type"] == "Overloaded" and time.monotonic() - t0 < 0.5  # at once, not queued
    # the three in: the running one and the queued ones pass their time limit (3 s) -> 504 JSON
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [504, 504, 504]
    assert answers[0].json()["error"]["type"] == "TimedOut"
    # the queued ones never started; the running one's thread still runs, and still counts
    assert app.state.search_gate.busy == 1
    gate.set()
    deadline = time.monotonic() + 10
    while app.state.search_gate.busy:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    monkeypatch.setattr(engine, "search", original)
    assert client.post("/v1/search", json=body).status_code == 200

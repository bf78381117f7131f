"""The remote (OpenAI-compatible) embedder: against a scripted fake server that fails, throttles
and answers out of order, and against a real ``cascade serve`` whose index must equal the local one."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

pytest.importorskip("httpx")

from cascade.retrieval.encoders import remote  # noqa: E402
from cascade.retrieval.encoders.backends import dense_encoder, encoder_config_from_json  # noqa: E402
from cascade.retrieval.encoders.remote import (  # noqa: E402
    RateLimiter,
    RemoteEncoder,
    RemoteEncoderConfig,
    parse_remote_model,
)
from cascade.retrieval.errors import IndexMismatch, InvalidInput, Unavailable  # noqa: E402

TEXTS = [f"text number {i} " + "x" * i for i in range(7)]


def fake_vector(text: str) -> list[float]:
    return [float(len(text)), float(sum(map(ord, text)) % 997), float(ord(text[-1])), 0.5]


class FakeServer(ThreadingHTTPServer):
    """Answers ``POST /v1/embeddings`` from a script: each step is ``"ok"`` (vectors, listed in
    reverse order with their ``index``) or ``(status, headers, body)``; past the script, ``"ok"``."""

    def __init__(self, steps):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.steps, self.requests = list(steps), []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        step = self.server.steps.pop(0) if self.server.steps else "ok"
        if step == "ok":
            data = [
                {"object": "embedding", "index": i, "embedding": fake_vector(t)}
                for i, t in enumerate(body["input"])
            ]
            status, headers, payload = 200, {}, {"object": "list", "data": data[::-1], "model": body["model"]}
        else:
            status, headers, payload = step
        raw = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def fake_server(*steps):
    server = FakeServer(steps)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sleeps(monkeypatch):
    """Record the waits instead of waiting."""
    waited: list[float] = []
    monkeypatch.setattr(remote, "_sleep", waited.append)
    return waited


def test_retries_a_500_honours_retry_after_and_keeps_the_order(sleeps):
    with fake_server(
        (500, {}, {"error": {"message": "boom"}}), (429, {"Retry-After": "7"}, {"error": "slow down"})
    ) as srv:
        enc = dense_encoder(
            f"openai:{srv.url}#tiny-embed", inputs_per_request=3, backoff_s=0.25, show_progress=False
        )
        assert isinstance(enc, RemoteEncoder)
        got = enc.encode_documents(TEXTS)
    # first try, the 500 (backoff 0.25 s), the 429 (its Retry-After, not the 0.5 s backoff), then answers
    assert sleeps == [0.25, 7.0]
    sent = [r["input"] for r in srv.requests]
    assert sent == [TEXTS[0:3]] * 3 + [TEXTS[3:6], TEXTS[6:7]]
    assert {r["path"] for r in srv.requests} == {"/v1/embeddings"} and {r["model"] for r in srv.requests} == {
        "tiny-embed"
    }
    np.testing.assert_array_equal(got, np.array([fake_vector(t) for t in TEXTS], dtype=np.float32))
    assert enc.dim == 4 and enc.config.server_dim == 4  # learned from the first answer


def test_prompts_truncation_and_normalization_are_applied_here(sleeps):
    with fake_server() as srv:
        enc = RemoteEncoder(
            f"openai:{srv.url}#m", query_prompt="query: ", dim=2, normalize=True, show_progress=False
        )
        got = enc.encode_queries(TEXTS[:2])
    assert srv.requests[0]["input"] == ["query: " + t for t in TEXTS[:2]]
    full = np.array([fake_vector("query: " + t)[:2] for t in TEXTS[:2]])
    np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-7)
    assert enc.dim == 2 and sleeps == []
    with fake_server() as srv:  # a width nobody has seen yet (a resumed build): one short request asks
        assert RemoteEncoder(f"openai:{srv.url}#m").dim == 4
    assert [r["input"] for r in srv.requests] == [["dimension probe"]]


def test_a_permanent_4xx_is_one_clear_line_without_retries(sleeps):
    refusal = (404, {}, {"error": {"message": "The model `nope` does not exist\nor you lack access."}})
    with fake_server(refusal) as srv:
        enc = RemoteEncoder(f"openai:{srv.url}#nope", show_progress=False)
        with pytest.raises(InvalidInput) as e:
            enc.encode_documents(TEXTS)
    message = str(e.value)
    assert (
        "\n" not in message
        and "HTTP 404" in message
        and "The model `nope` does not exist or you lack access" in message
    )
    assert srv.url in message and len(srv.requests) == 1 and sleeps == []


def test_gives_up_after_the_retries(sleeps):
    with fake_server(*[(503, {}, b"overloaded")] * 3) as srv:
        enc = RemoteEncoder(f"openai:{srv.url}#m", max_retries=2, backoff_s=1, show_progress=False)
        with pytest.raises(Unavailable, match="after 3 attempts: HTTP 503: overloaded"):
            enc.encode(TEXTS[:1])
    assert sleeps == [1, 2] and len(srv.requests) == 3
    with fake_server() as srv:
        url = srv.url
    enc = RemoteEncoder(
        f"openai:{url}#m", max_retries=1, backoff_s=0.5, show_progress=False
    )  # nothing listens
    with pytest.raises(Unavailable, match="after 2 attempts: not reachable"):
        enc.encode(TEXTS[:1])


def test_malformed_answers_and_a_changed_width_are_refused(sleeps):
    short = (200, {}, {"data": [{"index": 0, "embedding": [1.0, 2.0]}]})
    with fake_server(short) as srv:
        with pytest.raises(Unavailable, match="malformed answer: 1 embeddings for 2 inputs"):
            RemoteEncoder(f"openai:{srv.url}#m", show_progress=False).encode(TEXTS[:2])
    with fake_server() as srv:
        config = RemoteEncoderConfig(model=f"openai:{srv.url}#m", server_dim=384)  # as an index recorded it
        with pytest.raises(IndexMismatch, match="now returns 4-dim vectors; it returned 384"):
            RemoteEncoder(config=config).encode(TEXTS[:1])


def test_api_key_from_the_named_variable_is_sent_and_never_recorded(monkeypatch, sleeps):
    monkeypatch.setenv("EMBED_KEY", "sk-secret-123")
    with fake_server() as srv:
        enc = RemoteEncoder(f"openai:{srv.url}#m", api_key_env="EMBED_KEY", show_progress=False)
        enc.encode(TEXTS[:1])
    assert srv.requests[0]["auth"] == "Bearer sk-secret-123"
    recorded = json.dumps(enc.config.to_json())
    assert "sk-secret" not in recorded and '"api_key_env": "EMBED_KEY"' in recorded
    assert encoder_config_from_json(json.loads(recorded)) == enc.config
    monkeypatch.delenv("EMBED_KEY")
    with pytest.raises(InvalidInput, match="EMBED_KEY, which is not set"):
        RemoteEncoder(f"openai:{srv.url}#m", api_key_env="EMBED_KEY")


def test_names_and_settings_are_validated():
    assert parse_remote_model("openai:https://api.example.com/v1/#text-embedding-3-small") == (
        "https://api.example.com/v1", "text-embedding-3-small")  # fmt: skip
    for bad in ("openai:http://host/v1", "openai:host/v1#m", "openai:#m"):
        with pytest.raises(InvalidInput, match="openai:BASE_URL#MODEL"):
            parse_remote_model(bad)
    with pytest.raises(InvalidInput, match=r"\['pooling'\] do not apply to a remote embedder"):
        RemoteEncoderConfig.resolve("openai:http://h/v1#m", pooling="cls")
    with pytest.raises(InvalidInput, match="requests_per_second"):
        RemoteEncoderConfig(model="openai:http://h/v1#m", requests_per_second=0)
    assert (
        RemoteEncoderConfig.resolve("openai:http://h/v1#m", prompts="e5", layers=None).query_prompt
        == "query: "
    )
    from cascade.retrieval.dense.retriever import DenseRetriever
    from cascade.retrieval.types import Document

    with pytest.raises(InvalidInput, match="chunking needs the model's tokenizer"):
        DenseRetriever.build([Document("d", "text")], model="openai:http://h/v1#m", chunking="late")


def test_rate_limiter_paces_requests_and_tokens(monkeypatch):
    now = [100.0]

    def sleep(seconds):
        now[0] += seconds

    monkeypatch.setattr(remote, "_clock", lambda: now[0])
    monkeypatch.setattr(remote, "_sleep", sleep)
    limiter = RateLimiter(requests_per_second=4)
    starts = []
    for _ in range(3):
        limiter.acquire()
        starts.append(now[0])
    assert starts == pytest.approx([100.0, 100.25, 100.5])
    limiter = RateLimiter(tokens_per_minute=1000)
    assert limiter.acquire(600) == 0 and limiter.acquire(300) == 0
    assert limiter.acquire(300) == pytest.approx(60.0)  # 1,200 in the minute: waits for the first to age out
    assert limiter.acquire(5000) == pytest.approx(60.0)  # over the whole budget: alone in an empty window
    assert remote._retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1.0) == 0.0  # a date in the past
    assert remote._retry_after("2.5", 1.0) == 2.5 and remote._retry_after(None, 1.0) == 1.0


# --- against a real Cascade server ------------------------------------------------------


@pytest.fixture(scope="module")
def cascade_server(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("fastapi")
    from dense_models import tiny_st_dir
    from live_server import cascade_serve

    with cascade_serve(tmp_path_factory.mktemp("data"), "--embedder", f"tiny={tiny_st_dir()}") as url:
        yield url, str(tiny_st_dir())


def test_index_through_cascade_serve_equals_the_local_index(cascade_server, tmp_path):
    from collection_data import make_docs, make_queries

    from cascade.eval.presets import resolve_pipeline
    from cascade.indexing.index_set import IndexSet
    from cascade.retrieval.dense.retriever import DenseRetriever
    from cascade.retrieval.storage import read_manifest
    from cascade.retrieval.types import Query

    url, local_model = cascade_server
    docs = make_docs(40)
    queries = [Query(f"q{i}", t) for i, t in enumerate(make_queries(6))]
    # the server applies no prompts: the model's own ("query: ", "passage: ") are given here
    spec = resolve_pipeline({
        "retrievers": [{"retriever": "dense", "params": {
            "model": f"openai:{url}/v1#tiny",
            "encoder_settings": {"query_prompt": "query: ", "document_prompt": "passage: ", "inputs_per_request": 16},
        }}],
        "k": 10,
    })  # fmt: skip
    index_set = IndexSet(tmp_path / "idx", corpus=lambda: iter(docs))
    got = index_set.pipeline(spec).search(queries).rankings
    path = index_set.existing(spec.retrievers[0])
    recorded = read_manifest(path).params
    assert recorded["encoder"]["model"] == f"openai:{url}/v1#tiny" and recorded["encoder"]["server_dim"] == 32
    assert recorded["dim"] == 32 and "api_key" not in json.dumps(recorded).replace("api_key_env", "")
    remote_index = DenseRetriever.load(path)
    local_index = DenseRetriever.build(docs, model=local_model, device="cpu", show_progress=False)
    assert list(remote_index.doc_ids) == list(local_index.doc_ids)
    np.testing.assert_allclose(remote_index.embeddings, local_index.embeddings, atol=1e-6)
    assert isinstance(remote_index.encoder, RemoteEncoder)  # queries go to the same endpoint
    np.testing.assert_allclose(remote_index.encoder.encode_queries([q.text for q in queries]),
                               local_index.encoder.encode_queries([q.text for q in queries]), atol=1e-6)  # fmt: skip
    # the random tiny model's vectors are nearly parallel, so near-ties may swap: compare scores
    for g, w in zip(got, local_index.search(queries, k=10), strict=True):
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-6)

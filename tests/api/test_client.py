"""The Python client (`cascade.api.client`), sync and async, against a real `cascade serve`
process over loopback: every method, with results compared to raw httpx calls of the same routes."""

import asyncio
import socket

import httpx
import pytest
from client_server import (
    ANSWER,
    COLLECTION,
    QUERIES,
    RERANKER,
    documents,
    live_cascade,
    raw_rerank,
    raw_search,
)
from live_server import cascade_serve

from cascade.api.client import (
    AsyncCascadeClient,
    CascadeAPIError,
    CascadeClient,
    CollectionInfo,
    Hit,
    SearchResponse,
)
from cascade.retrieval.errors import CascadeError
from cascade.retrieval.types import Document

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FIELDS = ["title", "text", "metadata"]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with live_cascade(tmp_path_factory.mktemp("client")) as u:
        yield u


@pytest.fixture
def client(url):
    with CascadeClient(url, timeout=60) as c:
        yield c


def hits_as_json(hits: list[Hit]) -> list[dict]:
    return [{"id": h.id, "doc_id": h.doc_id, "score": h.score, "title": h.title, "text": h.text,
             "metadata": h.metadata} for h in hits]  # fmt: skip


def test_search_equals_the_raw_route(client, url):
    for query in QUERIES:
        raw = raw_search(url, {"collection": COLLECTION, "query": query, "k": 7, "fields": FIELDS})
        got = client.search(COLLECTION, query, k=7)
        assert (
            isinstance(got, SearchResponse)
            and got.collection == COLLECTION
            and got.pipeline == raw["pipeline"]
        )
        assert hits_as_json(got.hits) == raw["results"][0]["hits"] and got.hits
        assert [h.rank for h in got.hits] == list(range(1, len(got.hits) + 1))
        assert set(got.timings_ms) == set(raw["timings_ms"])
    # many queries, a pipeline, a filter and fewer fields
    body = {"collection": COLLECTION, "query": QUERIES, "k": 5, "pipeline": "bm25", "filter": {"group": {"$in": [1, 2]}},
            "fields": ["title"]}  # fmt: skip
    raw = raw_search(url, body)
    got = client.search(COLLECTION, QUERIES, k=5, pipeline="bm25", filter=body["filter"], fields=["title"])
    assert [r.query for r in got.results] == QUERIES
    for mine, theirs in zip(got.results, raw["results"], strict=True):
        assert [(h.id, h.doc_id, h.score, h.title) for h in mine.hits] == [
            (h["id"], h["doc_id"], h["score"], h["title"]) for h in theirs["hits"]
        ]
        assert all(h.text is None and h.metadata is None for h in mine.hits)
    full = client.search(COLLECTION, QUERIES[0], k=30, filter={"group": 3})
    assert full.hits and all(h.metadata["group"] == 3 for h in full.hits)


def test_collections_ingest_files_delete_and_compact(client, url, tmp_path):
    assert COLLECTION in client.list_collections()
    info = client.get_collection(COLLECTION)
    assert isinstance(info, CollectionInfo) and info.name == COLLECTION and info.num_documents == 30
    assert info.segments and info.config

    made = client.create_collection("bulk", pipeline="bm25", chunking={"max_tokens": 64, "overlap": 8})
    assert made.name == "bulk" and made.num_documents == 0 and made.config["chunking"]["max_tokens"] == 64
    assert {"bulk", COLLECTION} <= set(client.list_collections())

    seen_while_streaming = []

    def many():  # a generator: the client must send batches while it is still being consumed
        for i in range(2000):
            if i == 1500:
                seen_while_streaming.append(httpx.get(f"{url}/v1/collections/bulk").json()["num_documents"])
            if i % 2:
                yield Document(
                    f"g{i}", f"generated document number {i} uniqg{i}", f"t{i}", {"i": i, "odd": True}
                )
            else:
                yield {"id": f"g{i}", "text": f"generated document number {i} uniqg{i}", "title": f"t{i}",
                       "metadata": {"i": i, "odd": False}}  # fmt: skip

    result = client.ingest("bulk", many(), batch_size=500)
    assert (result.added, result.updated, result.unchanged, result.requests) == (2000, 0, 0, 4)
    assert seen_while_streaming == [1000]  # two batches of 500 were stored before item 1500 was produced
    assert client.get_collection("bulk").num_documents == 2000
    again = client.ingest("bulk", (d for d in many()), batch_size=1000)
    assert (again.added, again.updated, again.unchanged, again.requests) == (0, 0, 2000, 2)
    changed = client.ingest("bulk", [{"_id": "g0", "text": "replaced text uniqreplaced"}])
    assert (changed.added, changed.updated, changed.unchanged) == (0, 1, 0)
    assert client.ingest("bulk", iter([])).requests == 0

    odd = client.get_document("bulk", "g7")
    assert (odd.id, odd.title, odd.metadata) == ("g7", "t7", {"i": 7, "odd": True})
    client.ingest("bulk", [{"id": "dir/a b?#1", "text": "an awkward id uniqawkward"}])
    assert client.get_document("bulk", "dir/a b?#1").id == "dir/a b?#1"

    md = tmp_path / "notes.md"
    md.write_text("# Notes\n\nuniqmarkdown text in a markdown file")
    up = client.upload_files("bulk", [md, ("rows.csv", b"id,text,title,year\nc1,uniqcsv row,Row,2021\n")])
    assert (up.added, up.requests) == (2, 1)
    assert client.search("bulk", "uniqcsv", k=1).hits[0].doc_id == "c1"
    assert client.search("bulk", "uniqmarkdown", k=1).hits[0].doc_id == "notes.md"

    assert client.delete("bulk", ids=["g1", "g2", "missing"]) == 2
    assert client.delete("bulk", filter={"i": {"$lt": 10}}) == 7  # g3..g9 (g0 was replaced without metadata)
    assert client.delete("bulk", ids=["g10"], filter={"i": 11}) == 2
    with pytest.raises(CascadeAPIError) as e:
        client.get_document("bulk", "g1")
    assert (e.value.status, e.value.type) == (404, "NotFound")
    assert client.get_collection("bulk").num_documents == 2000 - 11 + 1 + 2

    done = client.compact("bulk")
    assert done.collection == "bulk" and done.segments == 1 == len(client.get_collection("bulk").segments)
    client.drop_collection("bulk")
    assert "bulk" not in client.list_collections()


def test_context_and_streamed_answer(client, url):
    body = {"collection": COLLECTION, "query": QUERIES[0], "max_tokens": 64, "k": 5}
    raw = httpx.post(url + "/v1/context", json=body, timeout=60).json()
    ctx = client.context(COLLECTION, QUERIES[0], max_tokens=64, k=5)
    assert ctx.text == raw["context"] and ctx.tokens == raw["tokens"] <= 64
    assert [(p.marker, p.id, p.doc_id, p.score, p.text) for p in ctx.passages] == [
        (p["marker"], p["id"], p["doc_id"], p["score"], p["text"]) for p in raw["passages"]
    ]

    events = list(client.answer(COLLECTION, QUERIES[0], max_tokens=64, k=5))
    assert [e.event for e in events] == ["citations"] + ["delta"] * len(ANSWER) + ["done"]
    assert [c.id for c in events[0].citations] == [p.id for p in ctx.passages]
    assert [e.text for e in events[1:-1]] == ANSWER
    assert events[-1].text == "".join(ANSWER) and events[-1].cited == [1]


def test_rerank_and_embeddings(client, url):
    texts = [d["text"] for d in documents()[:12]]
    got = client.rerank(QUERIES[0], texts, RERANKER)
    assert [(r.index, r.score) for r in got] == raw_rerank(url, QUERIES[0], texts)
    assert [r.text for r in got] == [texts[r.index] for r in got]
    top = client.rerank(QUERIES[0], [Document("x", t) for t in texts[:5]] + [{"text": texts[5]}], top_n=2)
    assert [(r.index, r.score) for r in top] == raw_rerank(
        url, QUERIES[0], texts[:6], top_n=2
    )  # default: first served
    assert client.rerank("q", []) == []

    emb = client.embeddings(["stem cells", "heart"], MINILM)
    raw = httpx.post(
        url + "/v1/embeddings", json={"input": ["stem cells", "heart"], "model": MINILM}, timeout=120
    )
    assert emb.vectors == [d["embedding"] for d in raw.json()["data"]] and len(emb.vectors[0]) == 384
    assert emb.model == MINILM and emb.usage == raw.json()["usage"]
    alone = client.embeddings("heart", MINILM).vectors  # a batch of one: equal up to padding effects
    assert len(alone) == 1 and alone[0] == pytest.approx(emb.vectors[1], abs=1e-5)
    short = client.embeddings("heart", MINILM, dimensions=64).vectors[0]
    assert len(short) == 64


def test_api_key_is_sent_as_bearer(tmp_path):
    key = "client-key-0123456789"
    with cascade_serve(tmp_path / "keyed", "--api-key", key) as keyed:
        with CascadeClient(keyed, api_key=key) as c:
            assert c.create_collection("mine").name == "mine" and c.list_collections() == ["mine"]
        for wrong in (None, "not-the-key-123"):
            with CascadeClient(keyed, api_key=wrong) as c, pytest.raises(CascadeAPIError) as e:
                c.list_collections()
            assert (e.value.status, e.value.type) == (401, "Unauthorized")


def test_an_error_inside_the_answer_stream_raises():
    from cascade.api.client._core import SSEReader

    reader = SSEReader()
    assert [reader.feed(line) for line in ("event: citations", 'data: {"passages": []}')] == [None, None]
    assert reader.feed("").event == "citations"
    assert reader.feed('data: {"delta": "Stem"}') is None and reader.feed("").text == "Stem"
    reader.feed("event: error")
    reader.feed('data: {"error": {"type": "Unavailable", "message": "the LLM went away"}}')
    with pytest.raises(CascadeAPIError) as e:
        reader.feed("")
    assert (e.value.status, e.value.type, e.value.message) == (None, "Unavailable", "the LLM went away")
    reader.feed("data: {not json")
    with pytest.raises(CascadeAPIError, match="InvalidResponse"):
        reader.close()


def test_errors_are_one_exception_type(client):
    with pytest.raises(CascadeAPIError) as e:
        client.search("nope", "x")
    err = e.value
    assert (err.status, err.type) == (404, "NotFound") and "nope" in err.message
    assert err.body == {"error": {"type": "NotFound", "message": err.message}}
    assert isinstance(err, CascadeError) and str(err).startswith("404 NotFound: ")

    with pytest.raises(CascadeAPIError) as e:
        client.search(COLLECTION, "x", filter={"n": {"$gt": []}})
    assert e.value.status == 422 and "finite number" in e.value.message
    with pytest.raises(CascadeAPIError) as e:
        client.search(COLLECTION, "x", k=100_000)
    assert (e.value.status, e.value.type) == (422, "ValidationError")
    with pytest.raises(CascadeAPIError) as e:
        client.create_collection(COLLECTION)
    assert e.value.status == 409
    with pytest.raises(CascadeAPIError) as e:
        client.get_collection("nope")
    assert (e.value.status, e.value.type) == (404, "NotFound")
    with pytest.raises(CascadeAPIError) as e:
        client.ingest(COLLECTION, [{"id": "bad"}])  # no text
    assert e.value.status == 422 and e.value.body["error"]["message"]
    with pytest.raises(CascadeAPIError) as e:
        list(client.answer("nope", "x"))
    assert (e.value.status, e.value.type) == (404, "NotFound")

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with CascadeClient(f"http://127.0.0.1:{port}", timeout=5) as dead, pytest.raises(CascadeAPIError) as e:
        dead.list_collections()
    assert e.value.status is None and e.value.type == "ConnectError" and e.value.body is None


def test_async_client_covers_every_route(url):
    texts = [d["text"] for d in documents()[:8]]

    async def main():
        async with AsyncCascadeClient(url, timeout=60) as c:
            raw = raw_search(url, {"collection": COLLECTION, "query": QUERIES[1], "k": 6, "fields": FIELDS})
            assert (
                hits_as_json((await c.search(COLLECTION, QUERIES[1], k=6)).hits) == raw["results"][0]["hits"]
            )
            many = await c.search(COLLECTION, QUERIES, k=3)
            assert [r.query for r in many.results] == QUERIES

            assert (
                await c.create_collection("abulk", chunking={"max_tokens": 64, "overlap": 8})
            ).name == "abulk"
            assert "abulk" in await c.list_collections()

            async def agen():
                for i in range(1200):
                    yield {"id": f"a{i}", "text": f"async document {i} uniqa{i}", "metadata": {"i": i}}

            res = await c.ingest("abulk", agen(), batch_size=500)
            assert (res.added, res.requests) == (1200, 3)
            res = await c.ingest("abulk", [Document("a0", "async document 0 uniqa0", "", {"i": 0})])
            assert (res.unchanged, res.requests) == (1, 1)
            assert (await c.get_collection("abulk")).num_documents == 1200
            assert (await c.get_document("abulk", "a5")).metadata == {"i": 5}
            up = await c.upload_files("abulk", [("x.jsonl", b'{"id": "j1", "text": "uniqjsonl line"}\n')])
            assert up.added == 1
            assert (await c.search("abulk", "uniqjsonl", k=1)).hits[0].doc_id == "j1"
            assert await c.delete("abulk", ids=["a1", "a2"]) == 2
            assert await c.delete("abulk", filter={"i": {"$gte": 1000}}) == 200
            assert (await c.compact("abulk")).segments == 1
            await c.drop_collection("abulk")
            assert "abulk" not in await c.list_collections()

            ctx = await c.context(COLLECTION, QUERIES[0], max_tokens=64)
            assert ctx.passages and ctx.tokens <= 64
            events = [e async for e in c.answer(COLLECTION, QUERIES[0], max_tokens=64)]
            assert "".join(e.text for e in events if e.event == "delta") == "".join(ANSWER)
            assert events[-1].event == "done" and events[-1].text == "".join(ANSWER)

            emb = await c.embeddings("heart", MINILM)
            assert len(emb.vectors) == 1 and len(emb.vectors[0]) == 384

            with pytest.raises(CascadeAPIError) as e:
                await c.search("nope", "x")
            assert (e.value.status, e.value.type) == (404, "NotFound")
            with pytest.raises(CascadeAPIError) as e:
                await c.search(COLLECTION, "x", filter={"$nope": 1})
            assert e.value.status == 422

            got = await c.rerank(QUERIES[0], texts, RERANKER, top_n=4)
            assert [(r.index, r.score) for r in got] == raw_rerank(url, QUERIES[0], texts, top_n=4)

    asyncio.run(main())

"""The search route's fast paths: concurrent searches batched into one engine call
(api/batching.py), each request getting exactly the answer it gets alone, an error that belongs
to one request staying its own; and the answer encoded from plain values, byte for byte what
the ``SearchOut`` model gives."""

import asyncio
import time

import httpx
import pytest
from api_helpers import serve
from collection_data import make_docs, make_queries

from cascade.api.app import build_engine, create_app
from cascade.api.schemas import SearchOut
from cascade.api.settings import Settings
from cascade.retrieval.errors import InvalidInput


@pytest.fixture
def app(tmp_path):
    settings = Settings(data_dir=tmp_path, background_compaction=False)
    engine = build_engine(settings)
    engine.create_collection("docs", "bm25", {"max_tokens": 512})
    engine.writable_collection("docs").upsert(make_docs(200))
    search = engine.search

    def slow_search(collection, texts, *args, **kwargs):
        if "poison" in texts:
            raise InvalidInput("poisoned query")
        time.sleep(0.05)  # long enough for the other requests to queue behind the first call
        return search(collection, texts, *args, **kwargs)

    engine.search = slow_search
    app = create_app(settings, engine)
    yield app
    engine.close()


async def _all(url, bodies):
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post("/v1/search", json=b) for b in bodies))


def test_concurrent_searches_share_calls_and_get_their_own_hits(app):
    queries = make_queries(24, seed=5)
    bodies = [{"collection": "docs", "query": q, "k": 5} for q in queries]
    bodies[3] = {"collection": "docs", "query": [queries[3], queries[0]], "k": 5}  # several queries in one
    with serve(app) as url:
        alone = [httpx.post(f"{url}/v1/search", json=b, timeout=60).json() for b in bodies]
        batcher = app.state.search_batcher
        calls0, searches0 = batcher.calls, batcher.searches
        together = asyncio.run(_all(url, bodies))
    assert batcher.searches - searches0 == len(bodies)
    assert batcher.calls - calls0 < len(bodies) / 2  # batched, not one call each
    for got, want in zip(together, alone, strict=True):
        assert got.status_code == 200, got.text
        assert got.json()["results"] == want["results"]  # same ids, scores, titles, texts, order
    assert len(alone[3]["results"]) == 2


def test_an_error_in_a_batch_stays_with_its_request(app):
    bodies = [{"collection": "docs", "query": q, "k": 3} for q in make_queries(8, seed=6)]
    bodies.insert(4, {"collection": "docs", "query": "poison", "k": 3})
    with serve(app) as url:
        rs = asyncio.run(_all(url, bodies))
    assert [r.status_code for r in rs] == [200] * 4 + [422] + [200] * 4
    assert rs[4].json()["error"] == {"type": "InvalidInput", "message": "poisoned query"}
    assert all(len(r.json()["results"][0]["hits"]) == 3 for i, r in enumerate(rs) if i != 4)


@pytest.mark.parametrize("fields", [["title", "text"], ["metadata"], [], ["text", "metadata", "title"]])
def test_plain_encoding_is_the_models_encoding(app, fields):
    queries = make_queries(2, seed=7)
    with serve(app) as url:
        r = httpx.post(
            f"{url}/v1/search", json={"collection": "docs", "query": queries, "k": 4, "fields": fields}
        )
    assert r.status_code == 200, r.text
    # what the declared response model makes of it, serialized as the route did before
    model = SearchOut.model_validate_json(r.content)
    assert model.model_dump_json(exclude_none=True).encode() == r.content
    hits = r.json()["results"][0]["hits"]
    assert len(hits) == 4 and all(set(h) == {"id", "doc_id", "score", *fields} for h in hits)

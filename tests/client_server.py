"""Servers for the Python client and framework adapter tests, all on loopback:

:func:`live_cascade` runs ``python -m cascade serve`` as a process (through
:func:`live_server.cascade_serve`) with a bm25 collection ``kb`` of 30 small documents carrying
metadata, a tiny random cross-encoder served as reranker ``tiny-ce`` (offline), and a scripted
OpenAI-compatible LLM (uvicorn in a thread) for ``/v1/answer``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
from api_helpers import serve
from collection_data import make_docs
from live_server import cascade_serve

COLLECTION = "kb"
RERANKER = "tiny-ce"
ANSWER = ["Stem cells ", "become neurons ", "[1]", " and repair tissue [1][9]."]
#: Queries that match several of the 30 documents (they share the generator's vocabulary).
QUERIES = ["stem cell gene", "w1 w2 w3 heart", "protein virus neuron", "blood w10 w20"]


def documents() -> list[dict]:
    """30 documents (ids d0..d29, metadata {"n": i, "group": i % 5}) as JSON objects."""
    return [
        {"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)} for d in make_docs(30)
    ]


def fake_llm():
    """A scripted chat-completions server: streams ANSWER in OpenAI's SSE chunk format."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat():
        async def events():
            for part in ANSWER:
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': part}}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextlib.contextmanager
def live_cascade(root: Path) -> Iterator[str]:
    """Yield the base URL of a ``cascade serve`` process holding collection ``kb`` and serving
    reranker ``tiny-ce`` and an LLM."""
    from rerank_models import tiny_bert_cross_encoder

    model = tiny_bert_cross_encoder(root / "ce")
    with serve(fake_llm()) as llm, cascade_serve(
        root / "data", "--llm-base-url", llm + "/v1", "--llm-model", "scripted",
        "--reranker", f"{RERANKER}=cross-encoder:{model}",
    ) as url:  # fmt: skip
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/collections", json={"name": COLLECTION, "pipeline": "bm25"})
            assert r.status_code == 201, r.text
            r = c.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": documents()})
            assert r.status_code == 200 and r.json()["added"] == 30, r.text
        yield url


def raw_search(url: str, body: dict) -> dict:
    r = httpx.post(url + "/v1/search", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def raw_rerank(url: str, query: str, texts: list[str], top_n: int | None = None) -> list[tuple[int, float]]:
    body = {"model": RERANKER, "query": query, "documents": texts, **({"top_n": top_n} if top_n else {})}
    r = httpx.post(url + "/v1/rerank", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return [(x["index"], x["relevance_score"]) for x in r.json()["results"]]


def raw_hits(url: str, query: str, k: int = 10, filter: dict | None = None) -> list[dict]:
    """``/v1/search``'s hits (every field), best first."""
    body = {"collection": COLLECTION, "query": query, "k": k, "fields": ["title", "text", "metadata"],
            **({"filter": filter} if filter else {})}  # fmt: skip
    hits = raw_search(url, body)["results"][0]["hits"]
    assert hits, f"{query!r} matches nothing"
    return hits


def expected_hits(url: str, query: str, k: int = 10, filter: dict | None = None) -> list[tuple[str, float]]:
    """(id, score) of ``/v1/search``'s hits, best first."""
    return [(h["id"], h["score"]) for h in raw_hits(url, query, k, filter)]


def adapter_metadata(hit: dict, rank: int) -> dict:
    """The metadata every adapter gives a hit: the stored metadata plus doc_id, title and rank."""
    return {**hit["metadata"], "doc_id": hit["doc_id"], "title": hit["title"], "rank": rank}

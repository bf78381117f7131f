"""The LangChain adapters against a real server: the retriever returns /v1/search's hits (ids,
order, scores, text, metadata), sync and async; the compressor orders as /v1/rerank does."""

import asyncio
import importlib
import sys

import pytest

pytest.importorskip(
    "langchain_core", reason="needs the langchain extra: pip install 'cascade-search[langchain]'"
)

from client_server import (  # noqa: E402
    COLLECTION,
    QUERIES,
    RERANKER,
    adapter_metadata,
    documents,
    expected_hits,
    raw_hits,
    raw_rerank,
)
from langchain_core.documents import Document  # noqa: E402

from cascade.api.adapters.langchain import CascadeRerank, CascadeRetriever  # noqa: E402
from cascade.retrieval.errors import MissingDependency  # noqa: E402

SOURCE = {d["id"]: d for d in documents()}


def test_retriever_returns_the_search_hits(url):
    for query in QUERIES:
        retriever = CascadeRetriever(collection=COLLECTION, k=6, base_url=url)
        docs = retriever.invoke(query)
        raw = raw_hits(url, query, k=6)
        assert [(d.id, d.metadata["score"]) for d in docs] == [(h["id"], h["score"]) for h in raw]
        for rank, (d, h) in enumerate(zip(docs, raw, strict=True), 1):
            assert d.page_content == h["text"] == SOURCE[h["doc_id"]]["text"]
            assert d.metadata == {**adapter_metadata(h, rank), "score": h["score"]}
            assert {k: d.metadata[k] for k in ("n", "group", "title")} == {
                **SOURCE[h["doc_id"]]["metadata"],
                "title": SOURCE[h["doc_id"]]["title"],
            }
        assert asyncio.run(retriever.ainvoke(query)) == docs
    filtered = CascadeRetriever(
        collection=COLLECTION, k=10, filter={"group": 2}, pipeline="bm25", base_url=url
    )
    docs = filtered.invoke(QUERIES[1])
    assert [(d.id, d.metadata["score"]) for d in docs] == expected_hits(url, QUERIES[1], 10, {"group": 2})
    assert all(d.metadata["group"] == 2 for d in docs)


def test_compressor_orders_as_the_rerank_route(url):
    docs = CascadeRetriever(collection=COLLECTION, k=10, base_url=url).invoke(QUERIES[0])
    texts = [d.page_content for d in docs]
    expected = raw_rerank(url, QUERIES[0], texts)
    rerank = CascadeRerank(base_url=url, model=RERANKER)
    out = rerank.compress_documents(docs, QUERIES[0])
    assert [(d.id, d.metadata["relevance_score"]) for d in out] == [(docs[i].id, s) for i, s in expected]
    assert [d.page_content for d in out] == [texts[i] for i, _ in expected]
    top = CascadeRerank(base_url=url, model=RERANKER, top_n=3)
    assert [d.id for d in top.compress_documents(docs, QUERIES[0])] == [docs[i].id for i, _ in expected[:3]]
    assert asyncio.run(rerank.acompress_documents(docs, QUERIES[0])) == out
    assert rerank.compress_documents([], QUERIES[0]) == []
    assert isinstance(out[0], Document)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.delitem(sys.modules, "cascade.api.adapters.langchain")
    with pytest.raises(MissingDependency, match=r"cascade-search\[langchain\]"):
        importlib.import_module("cascade.api.adapters.langchain")

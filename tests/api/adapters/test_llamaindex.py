"""The LlamaIndex adapters against a real server: the retriever returns /v1/search's hits as
NodeWithScore (ids, order, scores, text, metadata), sync and async; the postprocessor orders
as /v1/rerank does."""

import asyncio
import importlib
import sys

import pytest

pytest.importorskip(
    "llama_index.core", reason="needs the llamaindex extra: pip install 'cascade-search[llamaindex]'"
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
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402

from cascade.api.adapters.llamaindex import CascadeRerank, CascadeRetriever  # noqa: E402
from cascade.retrieval.errors import MissingDependency  # noqa: E402

SOURCE = {d["id"]: d for d in documents()}


def test_retriever_returns_the_search_hits(url):
    retriever = CascadeRetriever(COLLECTION, k=6, base_url=url)
    for query in QUERIES:
        nodes = retriever.retrieve(query)
        raw = raw_hits(url, query, k=6)
        assert all(isinstance(n, NodeWithScore) for n in nodes)
        assert [(n.node.node_id, n.score) for n in nodes] == [(h["id"], h["score"]) for h in raw]
        for rank, (n, h) in enumerate(zip(nodes, raw, strict=True), 1):
            assert n.node.ref_doc_id == h["doc_id"]
            assert (
                n.node.get_content(metadata_mode=MetadataMode.NONE)
                == h["text"]
                == SOURCE[h["doc_id"]]["text"]
            )
            assert n.node.metadata == adapter_metadata(h, rank)
            assert n.node.metadata["group"] == SOURCE[h["doc_id"]]["metadata"]["group"]
            assert "doc_id" not in n.node.get_content(metadata_mode=MetadataMode.LLM)
        again = asyncio.run(retriever.aretrieve(query))
        assert [(n.node.node_id, n.score, n.node.text) for n in again] == [
            (n.node.node_id, n.score, n.node.text) for n in nodes
        ]
    filtered = CascadeRetriever(
        COLLECTION, k=10, filter={"group": {"$in": [0, 4]}}, pipeline="bm25", base_url=url
    )
    nodes = filtered.retrieve(QueryBundle(QUERIES[2]))
    assert [(n.node.node_id, n.score) for n in nodes] == expected_hits(
        url, QUERIES[2], 10, {"group": {"$in": [0, 4]}}
    )


def test_postprocessor_orders_as_the_rerank_route(url):
    nodes = CascadeRetriever(COLLECTION, k=10, base_url=url).retrieve(QUERIES[0])
    texts = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
    expected = raw_rerank(url, QUERIES[0], texts)
    rerank = CascadeRerank(base_url=url, model=RERANKER)
    out = rerank.postprocess_nodes(nodes, query_str=QUERIES[0])
    assert [(n.node.node_id, n.score) for n in out] == [(nodes[i].node.node_id, s) for i, s in expected]
    top = CascadeRerank(base_url=url, model=RERANKER, top_n=3)
    assert [n.node.node_id for n in top.postprocess_nodes(nodes, QueryBundle(QUERIES[0]))] == [
        nodes[i].node.node_id for i, _ in expected[:3]
    ]
    again = asyncio.run(rerank.apostprocess_nodes(nodes, query_str=QUERIES[0]))
    assert [(n.node.node_id, n.score) for n in again] == [(n.node.node_id, n.score) for n in out]
    assert "api_key" not in rerank.to_dict()
    with pytest.raises(ValueError, match="needs the query"):
        rerank.postprocess_nodes(nodes)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    monkeypatch.delitem(sys.modules, "cascade.api.adapters.llamaindex")
    with pytest.raises(MissingDependency, match=r"cascade-search\[llamaindex\]"):
        importlib.import_module("cascade.api.adapters.llamaindex")

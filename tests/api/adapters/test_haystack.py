"""The Haystack retriever component against a real server: /v1/search's hits as Haystack
Documents (ids, order, scores, text, metadata), Haystack and Cascade filters, sync and async,
and a pipeline that survives serialization."""

import asyncio
import importlib
import inspect
import os
import sys

import pytest

# no usage telemetry: these tests reach nothing beyond loopback (read when haystack is imported)
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
pytest.importorskip("haystack", reason="needs the haystack extra: pip install 'cascade-search[haystack]'")

from client_server import COLLECTION, QUERIES, adapter_metadata, documents, expected_hits, raw_hits  # noqa: E402
from haystack import Pipeline  # noqa: E402

from cascade.api.adapters.haystack import CascadeRetriever, cascade_filter  # noqa: E402
from cascade.retrieval.errors import MissingDependency  # noqa: E402

SOURCE = {d["id"]: d for d in documents()}
MODULE = "cascade.api.adapters.haystack"


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    """Off even when haystack was imported before this module set the variable."""
    monkeypatch.setattr("haystack.telemetry._telemetry.telemetry", None, raising=False)


def pairs(docs):
    return [(d.id, d.score) for d in docs]


def test_run_returns_the_search_hits(url):
    retriever = CascadeRetriever(COLLECTION, base_url=url, top_k=6)
    for query in QUERIES:
        docs = retriever.run(query=query)["documents"]
        raw = raw_hits(url, query, k=6)
        assert pairs(docs) == [(h["id"], h["score"]) for h in raw]
        for rank, (d, h) in enumerate(zip(docs, raw, strict=True), 1):
            assert d.content == h["text"] == SOURCE[h["doc_id"]]["text"]
            assert d.meta == adapter_metadata(h, rank)
            assert d.meta["n"] == SOURCE[h["doc_id"]]["metadata"]["n"]
        assert pairs(asyncio.run(retriever.run_async(query=query))["documents"]) == pairs(docs)
    assert len(retriever.run(query=QUERIES[0], top_k=2)["documents"]) == 2

    haystack_filter = {"operator": "OR", "conditions": [
        {"field": "meta.group", "operator": "==", "value": 1},
        {"operator": "AND", "conditions": [{"field": "meta.n", "operator": ">=", "value": 20},
                                           {"field": "meta.group", "operator": "in", "value": [3, 4]}]},
    ]}  # fmt: skip
    native = {"$or": [{"group": {"$eq": 1}}, {"$and": [{"n": {"$gte": 20}}, {"group": {"$in": [3, 4]}}]}]}
    assert cascade_filter(haystack_filter) == native
    docs = retriever.run(query=QUERIES[1], top_k=10, filters=haystack_filter)["documents"]
    assert pairs(docs) == expected_hits(url, QUERIES[1], 10, native)
    assert all(d.meta["group"] == 1 or (d.meta["n"] >= 20 and d.meta["group"] in (3, 4)) for d in docs)
    init_filtered = CascadeRetriever(COLLECTION, base_url=url, top_k=10, filters=native, pipeline="bm25")
    assert pairs(init_filtered.run(query=QUERIES[1])["documents"]) == pairs(docs)
    with pytest.raises(ValueError, match="not supported"):
        cascade_filter({"operator": "NOT", "conditions": []})


def test_pipeline_serialization_round_trip(url):
    retriever = CascadeRetriever(COLLECTION, base_url=url, top_k=4, filters={"group": {"$ne": 0}})
    data = retriever.to_dict()
    assert data["type"] == f"{MODULE}.CascadeRetriever"
    assert data["init_parameters"]["api_key"] == {
        "type": "env_var",
        "env_vars": ["CASCADE_API_KEY"],
        "strict": False,
    }
    assert CascadeRetriever.from_dict(data).to_dict() == data

    pipe = Pipeline()
    pipe.add_component("retriever", retriever)
    extra = (
        {"allowed_modules": [MODULE]}
        if "allowed_modules" in inspect.signature(Pipeline.loads).parameters
        else {}
    )
    loaded = Pipeline.loads(pipe.dumps(), **extra)
    got = loaded.run({"retriever": {"query": QUERIES[3]}})["retriever"]["documents"]
    assert pairs(got) == expected_hits(url, QUERIES[3], 4, {"group": {"$ne": 0}})


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "haystack", None)
    monkeypatch.delitem(sys.modules, MODULE)
    with pytest.raises(MissingDependency, match=r"cascade-search\[haystack\]"):
        importlib.import_module(MODULE)

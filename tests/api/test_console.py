"""The search console at ``/``: its routes through FastAPI's TestClient, then the page itself
in a real Chromium (Playwright over Debian's ``chromium``) against ``cascade serve`` on
loopback. Every browser test compares the page's DOM with what the REST API answers for the
same request, saves a screenshot under its tmp_path, and fails on any console error."""

import json
import re

import httpx
import numpy as np
import pytest
from api_helpers import serve
from browser import PageErrors, launch
from collection_data import make_docs
from conftest import TOY_DOCS, TOY_QRELS, TOY_QUERIES
from fastapi.testclient import TestClient
from live_server import cascade_serve

from cascade.api.app import create_app
from cascade.api.settings import Settings
from cascade.eval.presets import preset_names
from cascade.eval.run_report import Scored, evaluation_report
from cascade.rerank.base import Reranker
from cascade.rerank.registry import RERANKERS
from cascade.retrieval.types import Ranking

KEY = "console-key-0001"
AUTH = {"authorization": f"Bearer {KEY}"}
# two BM25 indexes (default, and one without length normalization), fused: ranks move by stage
FUSED = {
    "retrievers": [
        {"retriever": "bm25", "depth": 50},
        {"retriever": "bm25", "depth": 50, "params": {"b": 0.0}},
    ],
    "fusion": {"method": "rrf"},
}
QUERY = "heart blood neuron w12"


# -- routes ----------------------------------------------------------------------------------


def test_console_files_and_presets_routes(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, api_keys={KEY: ["*"]}))
    with TestClient(app) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/console/app.js"' in page.text and "http" not in page.text.split("<body>")[1]
        assert c.get("/console/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/console/app.css").headers["content-type"].startswith("text/css")
        # offline: nothing is loaded from another host
        for name in ("/", "/console/app.js", "/console/app.css"):
            assert not re.search(r"https?://|//cdn|@import", c.get(name).text), name
        r = c.get("/console/index.html")  # only the listed files are served
        assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"
        assert c.get("/console/..%2Fapi%2Fauth.py").status_code == 404
        assert c.get("/v1/presets").status_code == 401  # the page is public, the API is not
        presets = c.get("/v1/presets", headers=AUTH).json()["presets"]
        assert sorted(presets) == preset_names()
        assert presets["hybrid"]["retrievers"][1]["retriever"] == "dense"
        # the page is not an API route; POST / stays TEI's
        assert "get" not in c.get("/openapi.json").json()["paths"].get("/", {})


# -- in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    with launch() as b:
        yield b


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    with cascade_serve(tmp_path_factory.mktemp("console"), "--api-key", KEY) as url:
        r = httpx.post(f"{url}/v1/collections", json={"name": "notes", "pipeline": FUSED}, headers=AUTH)
        assert r.status_code == 201, r.text
        docs = [
            {"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)}
            for d in make_docs(60)
        ]
        r = httpx.post(f"{url}/v1/collections/notes/documents", json={"documents": docs}, headers=AUTH)
        assert r.json()["added"] == 60
        yield url


def api_search(url, pipeline=None, k=10, **extra):
    body = {
        "collection": "notes",
        "query": QUERY,
        "k": k,
        "explain": True,
        "fields": ["title", "text", "metadata"],
    }
    if pipeline is not None:
        body["pipeline"] = pipeline
    r = httpx.post(f"{url}/v1/search", json={**body, **extra}, headers=AUTH)
    return r


def open_console(browser, url, viewport=None, allowed=()):
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
    errors = PageErrors(page, allowed)
    page.goto(url + "/")
    page.wait_for_function("document.body.dataset.ready === 'true'")
    # before the key is typed the page's first requests are refused: those 401s and nothing else
    assert errors.messages and all("status of 401" in m for m in errors.messages), errors.messages
    errors.messages.clear()
    page.fill("#api-key", KEY)
    page.press("#api-key", "Tab")  # "change": the page reloads collections and presets with the key
    page.wait_for_selector("#search-pipeline option[value='bm25']", state="attached")
    page.wait_for_selector("#global-error", state="hidden")
    return page, errors


def search(page, pipeline=None):
    page.fill("#search-query", QUERY)
    if pipeline is not None:
        page.select_option("#search-pipeline", pipeline)
    page.click("#search-form button[type=submit]")
    page.wait_for_selector(
        "#search-hits[data-state='done'], #search-hits[data-state='error']", state="attached"
    )


def dom_hits(page, list_id):
    return page.eval_on_selector_all(
        f"#{list_id} > li.hit",
        """els => els.map(li => ({id: li.dataset.id, title: li.querySelector('.title').textContent,
              marks: [...li.querySelectorAll('mark')].map(m => m.textContent.toLowerCase()),
              ranks: Object.fromEntries([...li.querySelectorAll('.stages .chip')].map(c => [c.dataset.stage, c.dataset.rank])),
              change: [...li.querySelectorAll('.change [data-change]')].map(c => c.dataset.change)}))""",
    )


def test_without_a_key_the_page_says_401(browser, server, tmp_path):
    # Chromium logs each failed fetch as "Failed to load resource": expected here, nothing else
    page = browser.new_page()
    errors = PageErrors(page, allowed=("status of 401",))
    page.goto(server + "/")
    page.wait_for_function("document.body.dataset.ready === 'true'")
    text = page.inner_text("#global-error")
    assert text.startswith("401 Unauthorized") and "missing API key" in text
    page.screenshot(path=tmp_path / "no-key.png")
    assert errors.unexpected() == []


def test_search_shows_hits_with_their_rank_at_each_stage(browser, server, tmp_path):
    page, errors = open_console(browser, server)
    search(page)  # the collection's own pipeline: two BM25 lists, fused
    want = api_search(server).json()
    hits = dom_hits(page, "search-hits")
    assert [h["id"] for h in hits] == [h["id"] for h in want["results"][0]["hits"]]
    assert want["stages"] == ["retrieve:bm25", "retrieve:bm25#2", "fuse:rrf"]
    for got, exp in zip(hits, want["results"][0]["hits"], strict=True):
        assert got["title"] == exp["title"]
        assert got["ranks"] == {s: str(exp["ranks"].get(s, "")) for s in want["stages"]}
        # query terms are marked as words (a short suffix allowed: "cells"), never inside one ("w70")
        assert got["marks"] and all(m.rstrip("s") in QUERY.split() for m in got["marks"]), got["marks"]
    # the fusion moved some hit: its ranks differ across the stages shown
    assert any(len(set(h["ranks"].values())) > 1 for h in hits)
    # one timing bar segment per stage the server timed (fetch included), in its order
    segs = page.eval_on_selector_all("#search-timings .tbar span", "els => els.map(e => e.dataset.stage)")
    assert segs == [k for k in want["timings_ms"] if k not in ("total", "total_cpu")]
    assert "retrieve:bm25" in segs and "fuse:rrf" in segs
    meta = page.inner_text("#search-hits > li.hit .metadata")
    assert "group:" in meta and "n:" in meta
    page.screenshot(path=tmp_path / "search.png", full_page=True)
    assert errors.unexpected() == []


def test_switching_the_pipeline_and_editing_a_spec(browser, server, tmp_path):
    page, errors = open_console(browser, server)
    search(page, "bm25")
    want = api_search(server, "bm25").json()
    assert page.get_attribute("#search-hits", "data-pipeline") == "bm25"
    hits = dom_hits(page, "search-hits")
    assert [h["id"] for h in hits] == [h["id"] for h in want["results"][0]["hits"]]
    assert all(list(h["ranks"]) == ["retrieve:bm25"] for h in hits)
    # the preset's spec is shown; editing it runs that spec instead
    spec = json.loads(page.input_value("#search-spec"))
    assert spec["retrievers"][0]["retriever"] == "bm25"
    page.click("[data-picker='search'] summary")
    custom = {"retrievers": [{"retriever": "bm25", "depth": 3}], "k": 3}
    page.fill("#search-spec", json.dumps(custom))
    assert page.input_value("#search-pipeline") == "custom"
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#search-hits[data-pipeline='custom'][data-state='done']", state="attached")
    want = api_search(server, custom).json()
    assert [h["id"] for h in dom_hits(page, "search-hits")] == [h["id"] for h in want["results"][0]["hits"]]
    page.screenshot(path=tmp_path / "custom.png", full_page=True)
    assert errors.unexpected() == []


def test_compare_two_pipelines(browser, server, tmp_path):
    page, errors = open_console(browser, server)
    page.click("[data-tab='compare']")
    page.fill("#compare-query", QUERY)
    page.select_option("#compare-b-pipeline", "bm25")
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("#compare-summary[data-state='done']", state="attached")
    a = [h["id"] for h in api_search(server).json()["results"][0]["hits"]]
    b = [h["id"] for h in api_search(server, "bm25").json()["results"][0]["hits"]]
    shared = len(set(a) & set(b))
    assert shared and any(x in b and b.index(x) != i for i, x in enumerate(a))  # they order some hits apart
    assert page.get_attribute("#compare-summary", "data-overlap") == str(shared)
    assert f"{shared} of 10" in page.inner_text("#compare-summary")
    got_a, got_b = dom_hits(page, "compare-hits-a"), dom_hits(page, "compare-hits-b")
    assert [h["id"] for h in got_a] == a and [h["id"] for h in got_b] == b
    for i, h in enumerate(got_b):  # B's rank change against A: positive = B ranks it higher
        assert h["change"] == (["only"] if h["id"] not in a else [str(a.index(h["id"]) - i)])
    page.screenshot(path=tmp_path / "compare.png", full_page=True)
    assert errors.unexpected() == []


class OverlapReranker(Reranker):
    """Scores a document by how many query words it contains: a reranker without a model."""

    def score(self, query, docs):
        words = set(query.lower().split())
        return np.array([len(words & set(d.text.lower().split())) for d in docs], dtype=float)


def test_a_rerank_stage_shows_how_far_it_moved_each_hit(browser, tmp_path, monkeypatch):
    """The same page against an in-process server that has a model-free reranker registered."""
    monkeypatch.setitem(RERANKERS._entries, "overlap", OverlapReranker)
    app = create_app(Settings(data_dir=tmp_path / "data", api_keys={KEY: ["*"]}, background_compaction=False))
    with TestClient(app) as c, serve(app) as url:
        assert (
            c.post("/v1/collections", json={"name": "notes", "pipeline": FUSED}, headers=AUTH).status_code
            == 201
        )
        docs = [
            {"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)}
            for d in make_docs(60)
        ]
        assert (
            c.post("/v1/collections/notes/documents", json={"documents": docs}, headers=AUTH).json()["added"]
            == 60
        )
        spec = {**FUSED, "rerankers": [{"reranker": "overlap", "depth": 20}]}
        page, errors = open_console(browser, url)
        page.click("[data-picker='search'] summary")
        page.fill("#search-spec", json.dumps(spec))
        search(page)
        want = api_search(url, spec).json()
        assert want["stages"] == ["retrieve:bm25", "retrieve:bm25#2", "fuse:rrf", "rerank:overlap"]
        hits = dom_hits(page, "search-hits")
        assert [h["id"] for h in hits] == [h["id"] for h in want["results"][0]["hits"]]
        for got, exp in zip(hits, want["results"][0]["hits"], strict=True):
            assert got["ranks"] == {s: str(exp["ranks"].get(s, "")) for s in want["stages"]}
        # the reranker lifted some hit from deep in the fused list: the page marks the move
        lifted = [int(h["ranks"]["fuse:rrf"]) - (i + 1) for i, h in enumerate(hits)]
        assert max(lifted) >= 3
        # each arrow into the rerank stage carries the move it made (none where it kept the rank)
        deltas = page.eval_on_selector_all(
            "#search-hits .stages .arrow[data-stage='rerank:overlap']",
            "els => els.map(e => e.querySelector('.move') ? Number(e.querySelector('.move').dataset.delta) : 0)",
        )
        assert deltas == lifted
        segs = page.eval_on_selector_all("#search-timings .tbar span", "els => els.map(e => e.dataset.stage)")
        assert "rerank:overlap" in segs
        page.screenshot(path=tmp_path / "rerank.png", full_page=True)
        assert errors.unexpected() == []


def test_a_bad_filter_shows_the_servers_422_inline(browser, server, tmp_path):
    page, errors = open_console(browser, server, allowed=("status of 422",))
    page.click(".filter summary")
    bad = {"group": {"$near": 3}}
    page.fill("#search-filter", json.dumps(bad))
    search(page)
    want = api_search(server, filter=bad)
    assert want.status_code == 422
    err = want.json()["error"]
    assert page.inner_text("#search-error .etype") == f"422 {err['type']}"
    assert page.inner_text("#search-error .emsg") == err["message"] and "$near" in err["message"]
    page.screenshot(path=tmp_path / "bad-filter.png")
    # not JSON at all: said in the page, nothing sent
    page.fill("#search-filter", "{group: 1")
    search(page)
    assert "the filter is not valid JSON" in page.inner_text("#search-error")
    # a good filter clears the error and filters
    page.fill("#search-filter", json.dumps({"group": 2}))
    search(page)
    assert page.is_hidden("#search-error")
    ids = [h["id"] for h in dom_hits(page, "search-hits")]
    assert ids and ids == [
        h["id"] for h in api_search(server, filter={"group": 2}).json()["results"][0]["hits"]
    ]
    assert errors.unexpected() == []


def test_context_view(browser, server, tmp_path):
    page, errors = open_console(browser, server)
    page.click("[data-tab='context']")
    page.fill("#context-query", QUERY)
    page.fill("#context-max", "120")
    page.click("#context-form button[type=submit]")
    page.wait_for_selector("#context-summary[data-state='done']", state="attached")
    r = httpx.post(
        f"{server}/v1/context", json={"collection": "notes", "query": QUERY, "max_tokens": 120}, headers=AUTH
    )
    want = r.json()
    assert page.get_attribute("#context-summary", "data-tokens") == str(want["tokens"])
    assert page.inner_text("#context-text") == want["context"]
    cited = page.eval_on_selector_all("#context-citations li", "els => els.map(e => e.dataset.docId)")
    assert cited == [p["doc_id"] for p in want["passages"]] and cited
    page.screenshot(path=tmp_path / "context.png", full_page=True)
    assert errors.unexpected() == []


def test_phone_width(browser, server, tmp_path):
    page, errors = open_console(browser, server, viewport={"width": 390, "height": 844})
    search(page)
    assert len(dom_hits(page, "search-hits")) == 10
    # nothing wider than the screen: no sideways scrolling
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.click("[data-tab='compare']")
    page.fill("#compare-query", QUERY)
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("#compare-summary[data-state='done']", state="attached")
    boxes = [page.locator(f"#compare-hits-{s}").bounding_box() for s in "ab"]
    assert boxes[1]["y"] > boxes[0]["y"] + boxes[0]["height"] - 1  # the sides stack
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=tmp_path / "phone.png", full_page=True)
    assert errors.unexpected() == []


def test_an_evaluation_report_opens(browser, tmp_path):
    """A report over the toy dataset (two hand-made runs) shows its tables and every figure."""
    qrels = {}
    for q, d, g in TOY_QRELS:
        qrels.setdefault(q, {})[d] = g
    run = {
        "q1": Ranking("q1", ("d3", "d1", "d2"), (3.0, 2.0, 1.0)),
        "q2": Ranking("q2", ("d2", "d4"), (2.0, 1.0)),
    }
    base = {
        "q1": Ranking("q1", ("d2", "d3", "d1"), (3.0, 2.0, 1.0)),
        "q2": Ranking("q2", ("d2", "d4"), (2.0, 1.0)),
    }
    pq = {"ndcg@10": {"q1": 1.0, "q2": 0.63}}
    base_pq = {"ndcg@10": {"q1": 0.69, "q2": 0.63}}
    summary = {"dataset": "toy", "split": "test", "pipeline": "new", "num_queries": 2, "timings_s": {"search": 0.1},
               "significance": {"ndcg@10": {"t_test_p": 0.5, "randomization_p": 0.49}}}  # fmt: skip
    titles = {d["_id"]: d["title"] for d in TOY_DOCS}
    page_path = evaluation_report(
        tmp_path / "report", summary, Scored("new", {"ndcg@10": float(np.mean([1.0, 0.63]))}, pq, run),
        {q["_id"]: q["text"] for q in TOY_QUERIES}, qrels,
        Scored("old", {"ndcg@10": 0.66}, base_pq, base), titles=lambda ids: {i: titles[i] for i in ids},
    )  # fmt: skip
    page = browser.new_page()
    errors = PageErrors(page)
    page.goto(page_path.as_uri())
    imgs = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
    assert imgs == [["waterfall-ndcg-10.png", imgs[0][1]]] and imgs[0][1] > 300
    headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
    assert headings == ["Metrics", "Timings", "Per-query differences", "Queries that changed most (ndcg@10)"]
    changed = page.eval_on_selector_all(
        "section:last-of-type tbody tr", "els => els.map(r => [...r.cells].map(c => c.innerText))"
    )
    assert len(changed) == 1 and changed[0][:2] == ["q1", "stem cell neurons"]
    assert changed[0][4] == "0.3100" and changed[0][5].splitlines()[0] == "d3 ★1 Neurons"
    assert changed[0][6].splitlines()[0] == "d2 Heart"
    wtl = page.eval_on_selector_all(
        "section:nth-of-type(3) tbody tr",
        "els => els.map(r => [...r.cells].slice(0, 4).map(c => c.innerText))",
    )
    assert wtl == [["ndcg@10", "1", "1", "0"]]
    page.screenshot(path=tmp_path / "report.png", full_page=True)
    assert errors.unexpected() == []

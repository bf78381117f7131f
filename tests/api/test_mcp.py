"""`cascade mcp` as a real process, driven by the `mcp` SDK's own client sessions (stdio and
streamable HTTP), checked against the in-process engine it wraps."""

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_beir
from live_server import cascade_process, free_port

from cascade.api.app import build_engine
from cascade.api.cli import main
from cascade.api.service.engine import Engine
from cascade.api.settings import Settings
from cascade.retrieval.types import Document

pytest.importorskip("mcp.server.mcpserver", reason="cascade mcp needs the mcp package, version 2 or later")

import anyio  # noqa: E402
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

TOOLS = {"search", "get_document", "rerank", "context", "list_collections", "evaluate_run"}
TIMEOUT = 120  # seconds for a whole session, start-up included
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

LONG = " ".join(f"cell{i % 40} membrane protein transport w{i}" for i in range(120))  # 600 words: 3 chunks
DOCS = [
    Document("d1", "Stem cells differentiate into neurons and glia in the developing brain.", "Stem cells",
             {"year": 2020, "lang": "en"}),
    Document("d2", "The heart pumps blood through arteries and veins.", "Heart", {"year": 2018, "lang": "en"}),
    Document("d3", "Neurons transmit signals; stem cell therapy repairs damaged neurons after injury.", "Neurons",
             {"year": 2022, "lang": "de"}),
    Document("d4", "Blood carries oxygen. Red blood cells carry hemoglobin.", "Blood", {"year": 2021}),
    Document("d5", "Gene therapy delivers genes into cells; stem cells are common carriers of neurons genes.",
             "Gene therapy", {"year": 2019}),
    Document("d6", LONG, "Membranes", {"year": 2015}),
]  # fmt: skip
QUERY = "stem cell neurons"


def _hits(out) -> list[tuple[str, str, float]]:
    return [(h.id, h.doc_id, float(h.score)) for h in out.hits[0]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data directory with a filled bm25 collection, and what the engine itself answers on it
    (the engine is closed before any server opens the directory)."""
    root = tmp_path_factory.mktemp("mcp-data")
    engine = Engine(root, background_compaction=False)
    try:
        engine.create_collection("docs", "bm25")
        coll = engine.writable_collection("docs")
        coll.upsert(DOCS)
        coll.compact(full=True)
        expected = {
            "search": _hits(engine.search("docs", [QUERY], None, 3)[1]),
            "search_2020": _hits(engine.search("docs", [QUERY], None, 10, {"year": {"$gte": 2020}})[1]),
            "doc": engine.collection("docs").get_document("d6"),
            "context": engine.context("docs", QUERY, max_tokens=30),
            "info": engine.collection("docs").info(),
        }
    finally:
        engine.close()
    return root, expected


def _server(data_dir: Path, *args: str, env: dict | None = None) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "cascade", "mcp", "--data-dir", str(data_dir), *args],
        env={**OFFLINE, **(env or {})}, cwd=str(data_dir),
    )  # fmt: skip


def _run(session_body, params: StdioServerParameters, log: Path):
    """Open a stdio session on ``params`` and run ``session_body(session)`` within TIMEOUT; the
    server's stderr goes to ``log`` and is shown when the session fails."""

    async def go():
        with anyio.fail_after(TIMEOUT), open(log, "w") as err:
            async with stdio_client(params, errlog=err) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=TIMEOUT) as session:
                    await session.initialize()
                    return await session_body(session)

    try:
        return anyio.run(go)
    except BaseException:
        print(f"--- server stderr ---\n{log.read_text() if log.exists() else ''}", file=sys.stderr)
        raise


def _text(result) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def _ok(result) -> dict:
    assert not result.is_error, _text(result)
    assert json.loads(_text(result)) == result.structured_content  # the same answer for text-only clients
    return result.structured_content


def test_stdio_tools_answer_like_the_engine(data, tmp_path):
    data_dir, expected = data
    qrels_file = tmp_path / "qrels.txt"
    qrels_file.write_text("q1 0 d1 1\nq1 0 d3 1\nq2 0 d4 2\n")
    beir = write_beir(tmp_path / "toy", [{"_id": d.id, "text": d.text} for d in DOCS],
                      [{"_id": "q1", "text": "x"}, {"_id": "q2", "text": "y"}],
                      [("q1", "d1", 1), ("q1", "d3", 1), ("q2", "d4", 2)])  # fmt: skip
    run_text = "q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\nq1 Q0 d3 3 1.0 t\nq2 Q0 d2 1 2.0 t\nq2 Q0 d4 2 1.0 t\n"

    async def body(s: ClientSession):
        out = {"tools": (await s.list_tools()).tools}
        out["search"] = await s.call_tool("search", {"collection": "docs", "query": QUERY, "k": 3})
        out["search_2020"] = await s.call_tool(
            "search", {"collection": "docs", "query": QUERY, "filter": {"year": {"$gte": 2020}}, "snippet_chars": 20}
        )
        out["doc"] = await s.call_tool("get_document", {"collection": "docs", "id": "d6"})
        out["collections"] = await s.call_tool("list_collections", {})
        out["context"] = await s.call_tool("context", {"collection": "docs", "query": QUERY, "max_tokens": 30})
        args = {"run": run_text, "qrels": str(qrels_file), "metrics": "ndcg@10,recall@2"}
        out["eval"] = await s.call_tool("evaluate_run", args)
        out["eval_beir"] = await s.call_tool("evaluate_run", {**args, "qrels": str(beir), "per_query": True})
        out["unknown"] = await s.call_tool("search", {"collection": "nope", "query": QUERY})
        out["bad_filter"] = await s.call_tool(
            "search", {"collection": "docs", "query": QUERY, "filter": {"year": {"$regex": "2"}}}
        )
        out["bad_metric"] = await s.call_tool("evaluate_run", {**args, "metrics": "ndcg@x"})
        out["bad_run"] = await s.call_tool("evaluate_run", {**args, "run": "q1 Q0 d1 1 high t\nq1 Q0 d2 2 1 t"})
        out["no_doc"] = await s.call_tool("get_document", {"collection": "docs", "id": "zz"})
        out["after_errors"] = await s.call_tool("list_collections", {})  # still serving
        return out

    out = _run(body, _server(data_dir), tmp_path / "stdio.log")

    tools = {t.name: t for t in out["tools"]}
    assert set(tools) == TOOLS
    for t in tools.values():
        assert t.description and t.input_schema["type"] == "object" and t.output_schema, t.name
    assert set(tools["search"].input_schema["required"]) == {"collection", "query"}
    assert {"k", "pipeline", "filter"} <= set(tools["search"].input_schema["properties"])
    assert set(tools["evaluate_run"].input_schema["required"]) == {"run", "qrels"}
    assert tools["list_collections"].input_schema["properties"] == {}

    # search: the engine's own ranking, ids, order and scores
    got = _ok(out["search"])
    assert (got["collection"], got["pipeline"], got["query"]) == ("docs", "bm25", QUERY)
    assert [(h["id"], h["doc_id"], h["score"]) for h in got["hits"]] == expected["search"]
    assert len(got["hits"]) == 3 and got["hits"][0]["doc_id"] in {"d1", "d3", "d5"}
    top = next(d for d in DOCS if d.id == got["hits"][0]["doc_id"])
    assert (got["hits"][0]["title"], got["hits"][0]["text"]) == (top.title, top.text)
    assert got["hits"][0]["metadata"]["year"] == top.metadata["year"]
    filtered = _ok(out["search_2020"])
    assert [(h["id"], h["doc_id"], h["score"]) for h in filtered["hits"]] == expected["search_2020"]
    assert all(h["metadata"]["year"] >= 2020 for h in filtered["hits"])
    assert all(len(h["text"]) <= 22 for h in filtered["hits"])  # 20 characters and " …"

    doc = _ok(out["doc"])
    assert doc["id"] == "d6" and doc["title"] == "Membranes" and doc["metadata"] == {"year": 2015}
    assert doc["num_chunks"] == expected["doc"]["num_chunks"] > 1

    colls = _ok(out["collections"])["collections"]
    info = expected["info"]
    assert colls == [{"name": "docs", "num_documents": info["num_documents"], "num_chunks": info["num_chunks"],
                      "pipeline": "bm25", "read_only": False}]  # fmt: skip

    # context: numbered passages within the budget, each cited back to its document
    ctx = _ok(out["context"])
    want = expected["context"]
    assert ctx["context"] == want.text and ctx["tokens"] == want.tokens
    assert 0 < ctx["tokens"] <= 30 and len(ctx["context"].split()) <= 30
    assert [(c["marker"], c["doc_id"]) for c in ctx["citations"]] == [(p.marker, p.doc_id) for p in want.passages]
    assert ctx["citations"] and ctx["skipped_for_budget"] >= 1
    for c in ctx["citations"]:
        assert f"[{c['marker']}] " in ctx["context"] and c["title"] and c["start"] is not None

    # evaluate_run, checked by hand:
    #   q1 ranks d1 (rel 1), d2, d3 (rel 1): nDCG = (1 + 1/log2 4) / (1 + 1/log2 3);
    #   q2 ranks d2, d4 (rel 2): nDCG = (2/log2 3) / 2.  recall@2: q1 1/2, q2 1/1.
    ndcg_q1 = 1.5 / (1 + 1 / math.log2(3))
    ndcg_q2 = (2 / math.log2(3)) / 2
    ev = _ok(out["eval"])
    assert ev["metrics"]["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-6)
    assert ev["metrics"]["recall@2"] == pytest.approx(0.75, abs=1e-9)
    assert (ev["num_queries"], ev["num_run_queries"], ev["relevance_level"]) == (2, 2, 1)
    ev = _ok(out["eval_beir"])  # the same judgments from a BEIR dataset directory
    assert ev["metrics"]["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-6)
    assert ev["per_query"]["ndcg@10"] == pytest.approx({"q1": ndcg_q1, "q2": ndcg_q2}, abs=1e-6)

    # errors the user can fix: a tool error with the engine's one-line message, and the server lives on
    for key, message in [
        ("unknown", "no collection 'nope'"),
        ("bad_filter", "$regex"),
        ("bad_metric", "unknown metric 'ndcg@x'"),
        ("bad_run", "run:1: score 'high' is not a number"),
        ("no_doc", "has no document 'zz'"),
    ]:
        r = out[key]
        assert r.is_error and message in _text(r) and "\n" not in _text(r), (key, _text(r))
    assert _ok(out["after_errors"])["collections"][0]["name"] == "docs"


def test_stdio_rerank_scores_with_a_local_cross_encoder(data, tmp_path):
    pytest.importorskip("transformers")
    from rerank_models import tiny_bert_cross_encoder

    data_dir, _ = data
    model = tiny_bert_cross_encoder(tmp_path / "ce")
    texts = [d.text for d in DOCS[:5]]
    settings = Settings(data_dir=tmp_path / "ref", rerankers={"ce": {"family": "cross-encoder", "checkpoint": str(model)}})
    ref = build_engine(settings)  # the engine the server builds, in this process
    try:
        want = ref.rerank("ce", QUERY, texts)
    finally:
        ref.close()

    async def body(s: ClientSession):
        ranked = await s.call_tool("rerank", {"query": QUERY, "documents": texts, "model": "ce"})
        top2 = await s.call_tool("rerank", {"query": QUERY, "documents": texts, "top_n": 2})  # the first served
        unknown = await s.call_tool("rerank", {"query": QUERY, "documents": texts, "model": "nope"})
        return ranked, top2, unknown

    server = _server(data_dir, "--reranker", f"ce=cross-encoder:{model}")
    ranked, top2, unknown = _run(body, server, tmp_path / "rerank.log")
    got = _ok(ranked)["results"]
    assert [r["index"] for r in got] == [i for i, _ in want]
    assert [r["score"] for r in got] == pytest.approx([s for _, s in want], abs=1e-5)
    assert [r["text"] for r in got] == [texts[i] for i, _ in want]
    scores = [r["score"] for r in got]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)  # real, distinct scores
    assert _ok(top2)["results"] == got[:2]
    assert unknown.is_error and "'nope' is not served" in _text(unknown) and "ce" in _text(unknown)


@contextlib.contextmanager
def _http_server(data_dir: Path, *args: str):
    port = free_port()
    log = data_dir.parent / f"mcp-http-{port}.log"

    def listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False

    args = ("mcp", "--transport", "http", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), *args)
    with cascade_process(list(args), log, listening, TIMEOUT, stdin=subprocess.DEVNULL, cwd=data_dir,
                         env={**os.environ, **OFFLINE}):  # fmt: skip
        yield f"http://127.0.0.1:{port}/mcp", log


def test_streamable_http_lists_tools_and_searches(data, tmp_path):
    data_dir, expected = data
    qrels_file = tmp_path / "qrels.txt"
    qrels_file.write_text("q1 0 d1 1\n")

    async def go(url):
        with anyio.fail_after(TIMEOUT):
            async with streamable_http_client(url) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=TIMEOUT) as s:
                    await s.initialize()
                    tools = (await s.list_tools()).tools
                    hits = await s.call_tool("search", {"collection": "docs", "query": QUERY, "k": 3})
                    by_path = await s.call_tool("evaluate_run", {"run": "q1 Q0 d1 1 1 t", "qrels": str(qrels_file)})
                    by_text = await s.call_tool("evaluate_run", {"run": "q1 Q0 d1 1 1 t", "qrels": "q1 0 d1 1"})
                    return tools, hits, by_path, by_text

    with _http_server(data_dir) as (url, log):
        try:
            tools, hits, by_path, by_text = anyio.run(go, url)
        except BaseException:
            print(f"--- server stderr ---\n{log.read_text()}", file=sys.stderr)
            raise
    assert {t.name for t in tools} == TOOLS
    got = _ok(hits)
    assert [(h["id"], h["doc_id"], h["score"]) for h in got["hits"]] == expected["search"]
    # over HTTP the client is not on this machine: no file is read unless --allow-paths
    assert by_path.is_error and "reads no files" in _text(by_path)
    assert _ok(by_text)["metrics"]["ndcg@10"] == pytest.approx(1.0)


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    assert main(["mcp", "--data-dir", str(tmp_path), "--reranker", "ce=/no/family"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cascade: error: --reranker") and "\n" not in err
    assert main(["mcp", "--data-dir", str(tmp_path), "--index", f"ro={tmp_path / 'missing'}"]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
    # without the mcp package: one line naming the extra
    monkeypatch.setitem(sys.modules, "mcp", None)
    assert main(["mcp", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'cascade-search[mcp]'" in err and "mcp package" in err


def test_evaluate_run_takes_text_files_and_beir_tsv(tmp_path):
    from cascade.api.mcp import evaluate_text
    from cascade.retrieval.errors import InvalidInput, NotFound

    run = "q1 Q0 d2 1 2 t\nq1 Q0 d1 2 1 t\n"
    (tmp_path / "run.txt").write_text(run)
    tsv = tmp_path / "test.tsv"
    tsv.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")  # BEIR's qrels layout
    for r, q in [(run, "q1 0 d1 1"), (str(tmp_path / "run.txt"), str(tsv)), (run, tsv.read_text())]:
        out = evaluate_text(r, q, "mrr@10,p@1")
        assert out.metrics == {"mrr@10": 0.5, "p@1": 0.0} and out.num_queries == 1
    with pytest.raises(NotFound, match="run 'missing.txt': no such file"):
        evaluate_text("missing.txt", "q1 0 d1 1")
    with pytest.raises(InvalidInput, match="reads no files"):
        evaluate_text(str(tmp_path / "run.txt"), "q1 0 d1 1", allow_paths=False)
    with pytest.raises(InvalidInput, match=r"^qrels:2: expected 'qid iter docid rel'$"):
        evaluate_text(run, "q1 0 d1 1\nq1 d2 1 0 extra")

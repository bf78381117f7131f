"""``cascade bench soak``: a short soak against a real server, and its verifier catching a
collection that does not hold what the acknowledged writes say."""

import asyncio
import json
import random

import httpx
from collection_data import make_docs, make_queries
from live_server import cascade_serve

from cascade.eval.bench import run_benchmark
from cascade.eval.benchmarks.soak import _Client, _verify, sha


def _dataset(path):
    path.mkdir()
    with open(path / "corpus.jsonl", "w") as f:
        for d in make_docs(120):
            f.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    with open(path / "queries.jsonl", "w") as f:
        for i, q in enumerate(make_queries(20)):
            f.write(json.dumps({"_id": str(i), "text": q}) + "\n")
    return path


def test_short_soak_holds_its_invariants(tmp_path):
    opts = {"clients": 3, "seconds": 6, "warmup": 3, "base_docs": 60, "docs_per_client": 12, "sample_s": 0.25}
    out = run_benchmark("soak", _dataset(tmp_path / "ds"), plot=tmp_path / "soak.png", **opts)
    ours = out["ours"]
    print(
        json.dumps(
            {k: ours[k] for k in ("requests", "errors", "requests_by_op", "latency_ms", "rss", "documents")}
        )
    )
    assert set(out) >= {"benchmark", "ours", "baseline", "ratio"} and out["baseline"]["name"]
    assert ours["errors"] == 0 and ours["requests"] > 0
    assert all(ours["requests_by_op"][op] > 0 for op in ("search", "ingest", "upsert", "delete")), ours
    docs = ours["documents"]
    assert docs["exact"] and docs["uncertain"] == 0 and docs["found"] == docs["expected"] > 60, docs
    assert ours["rss"]["growth"] is not None and ours["rss"]["growth"] < 0.10, ours["rss"]
    assert ours["pass"] and out["ratio"] > 1
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verifier_catches_wrong_missing_and_undeleted_documents(tmp_path):
    with cascade_serve(tmp_path / "data") as url:
        docs = [{"id": "a", "text": "alpha soakc0v1", "metadata": {"sha256": sha("alpha soakc0v1")}},
                {"id": "b", "text": "beta soakc0v2", "metadata": {"sha256": sha("beta soakc0v2")}}]  # fmt: skip
        assert httpx.post(f"{url}/v1/collections", json={"name": "s", "pipeline": "bm25"}).status_code == 201
        assert httpx.post(f"{url}/v1/collections/s/documents", json={"documents": docs}).status_code == 200

        def verify(live, deleted=()):
            c = _Client(0, random.Random(0), live=dict(live), deleted=set(deleted))
            c.tokens = {"a": "soakc0v1", "b": "soakc0v2", "c": "soakc0v3"}

            async def go():
                async with httpx.AsyncClient(base_url=url) as client:
                    return await _verify(httpx, client, "s", [c], 0)

            return asyncio.run(go())

        truth = {"a": sha("alpha soakc0v1"), "b": sha("beta soakc0v2")}
        assert verify(truth)["exact"]
        assert verify({**truth, "b": sha("beta, an older version")})["wrong_content"] == 1
        assert verify({**truth, "c": sha("gamma")})["missing"] == 1
        bad = verify({"a": truth["a"]}, deleted={"b"})
        assert bad["deleted_but_present"] == 1 and not bad["exact"]

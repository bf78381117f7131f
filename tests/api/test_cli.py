"""The ``cascade`` CLI as a user runs it: a real process, its stdout, stderr and exit code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOY_DOCS, TOY_QRELS, TOY_QUERIES, write_beir

ROOT = Path(__file__).resolve().parents[2]


def cascade(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CASCADE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cascade.api.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def assert_clean_error(p: subprocess.CompletedProcess, pattern: str) -> None:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("cascade: error:") and pattern in lines[0], p.stderr


def test_eval_json_contract_and_cached_index(toy_dataset, tmp_path):
    p = cascade("eval", "--dataset", str(toy_dataset), "--pipeline", "bm25", "--json",
                "--metrics", "ndcg@10,recall@100,mrr@10", "--run-out", str(tmp_path / "run.trec"), cache=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert set(out) >= {"dataset", "split", "pipeline", "num_queries", "metrics", "timings_s"}
    assert out["num_queries"] == 2 and out["pipeline"] == "bm25"
    assert out["metrics"]["mrr@10"] == pytest.approx(1.0)
    assert (tmp_path / "run.trec").read_text().startswith("q1 Q0 d1 1 ")
    built = sorted(p.name for p in (tmp_path / "indexes").iterdir())
    again = cascade("eval", "--dataset", str(toy_dataset), "--pipeline", "bm25", "--json", cache=tmp_path)
    assert json.loads(again.stdout)["metrics"] == {k: out["metrics"][k] for k in json.loads(again.stdout)["metrics"]}
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == built
    # a saved run evaluates to the same figures, and compares against itself with p = 1
    rerun = cascade("eval", "--dataset", str(toy_dataset), "--run", str(tmp_path / "run.trec"), "--json",
                    "--compare", str(tmp_path / "run.trec"), "--per-query", cache=tmp_path)
    res = json.loads(rerun.stdout)
    assert res["metrics"]["ndcg@10"] == pytest.approx(out["metrics"]["ndcg@10"], abs=1e-6)
    assert res["significance"]["ndcg@10"]["randomization_p"] == 1.0
    assert set(res["per_query"]["ndcg@10"]) == {"q1", "q2"}


def test_pipeline_file(toy_dataset, tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text("retrievers:\n  - retriever: bm25\n    depth: 2\n    params: {k1: 1.2, b: 0.75}\nk: 2\n")
    p = cascade("eval", "--dataset", str(toy_dataset), "--pipeline", str(spec), "--json", cache=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["pipeline"] == "p"  # a spec file is named after its stem
    spec.write_text("retrievers: []\n")
    assert_clean_error(cascade("eval", "--dataset", str(toy_dataset), "--pipeline", str(spec), cache=tmp_path),
                       "invalid pipeline spec")
    spec.write_text("retrievers:\n  - retriever: nope\n")
    assert_clean_error(cascade("eval", "--dataset", str(toy_dataset), "--pipeline", str(spec), cache=tmp_path),
                       "unknown retriever 'nope'")


def test_bad_input_is_one_line_and_nonzero(toy_dataset, tmp_path):
    assert_clean_error(cascade("eval", "--dataset", str(tmp_path / "none"), "--pipeline", "bm25", cache=tmp_path),
                       "neither a directory nor a BEIR dataset name")
    assert_clean_error(cascade("eval", "--dataset", str(toy_dataset), "--pipeline", "bm99", cache=tmp_path),
                       "unknown pipeline preset 'bm99'")
    assert_clean_error(cascade("eval", "--dataset", str(toy_dataset), "--pipeline", "bm25", "--metrics", "bleu@4",
                               cache=tmp_path), "unknown metric 'bleu@4'")
    assert_clean_error(cascade("eval", "--dataset", str(toy_dataset), "--split", "dev", "--pipeline", "bm25",
                               cache=tmp_path), "no split 'dev'")
    bad = write_beir(tmp_path / "bad", TOY_DOCS, TOY_QUERIES, TOY_QRELS)
    with open(bad / "corpus.jsonl", "a") as f:
        f.write('{"_id": "d9", "text": \n')
    assert_clean_error(cascade("eval", "--dataset", str(bad), "--pipeline", "bm25", cache=tmp_path),
                       "corpus.jsonl:5: invalid JSON")
    dup = write_beir(tmp_path / "dup", TOY_DOCS + [TOY_DOCS[0]], TOY_QUERIES, TOY_QRELS)
    assert_clean_error(cascade("eval", "--dataset", str(dup), "--pipeline", "bm25", cache=tmp_path),
                       "duplicate document id 'd1'")
    empty = write_beir(tmp_path / "empty", [], TOY_QUERIES, TOY_QRELS)
    assert_clean_error(cascade("eval", "--dataset", str(empty), "--pipeline", "bm25", cache=tmp_path), "empty")
    # none of the failures left a half-built index behind
    assert not any((tmp_path / "indexes").glob("*/bm25-*/manifest.json")) if (tmp_path / "indexes").exists() else True


def test_index_then_search(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": d["_id"], "body": d["text"]}) + "\n" for d in TOY_DOCS))
    p = cascade("index", "--corpus", str(corpus), "--out", str(tmp_path / "idx"), "--id-field", "id",
                "--text-field", "body", "--json", cache=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["num_docs"] == 4
    s = cascade("search", "--index", str(tmp_path / "idx"), "-q", "red blood cells oxygen", "-k", "2", "--json",
                cache=tmp_path)
    assert s.returncode == 0, s.stderr
    hits = json.loads(s.stdout)["results"][0]["hits"]
    assert [h["id"] for h in hits] == ["d4", "d2"]
    assert hits[0]["text"].startswith("Blood carries oxygen")
    assert_clean_error(cascade("search", "--index", str(tmp_path / "nope"), "-q", "x", cache=tmp_path),
                       "does not exist")
    assert_clean_error(cascade("search", "--index", str(tmp_path / "idx"), "-q", " ", cache=tmp_path), "non-empty")


def test_sharded_index_answers_like_the_plain_one(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TOY_DOCS))
    results = []
    for name, extra in (("plain", []), ("sharded", ["--shards", "3"])):
        p = cascade("index", "--corpus", str(corpus), "--out", str(tmp_path / name), *extra, cache=tmp_path)
        assert p.returncode == 0, p.stderr
        s = cascade("search", "--index", str(tmp_path / name), "-q", "blood cells neurons", "--json", cache=tmp_path)
        results.append([(h["id"], round(h["score"], 5)) for h in json.loads(s.stdout)["results"][0]["hits"]])
    assert results[0] == results[1] and len(results[0]) == 4
    assert any(p.name.endswith("-x3") for p in (tmp_path / "sharded").iterdir())

"""With ``--json`` stdout carries exactly one JSON object, whatever writes to it on the way."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.api import cli

ROOT = Path(__file__).resolve().parents[2]


def test_writes_to_file_descriptor_1_go_to_stderr(toy_dataset, capfd, monkeypatch):
    """Java and numba write to fd 1 directly, past ``sys.stdout``; they must not reach stdout."""
    from cascade.eval import evaluate

    real = evaluate.evaluate_pipeline

    def noisy(*args, **kwargs):
        os.write(1, b"[main] INFO io.anserini.index.IndexCollection - a JVM log line\n")
        print("a print from a library")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_pipeline", noisy)
    assert cli.main(["eval", "--dataset", str(toy_dataset), "--pipeline", "bm25", "--json"]) == 0
    out, err = capfd.readouterr()
    report = json.loads(out)  # stdout is one JSON object, nothing else
    assert report["num_queries"] == 2 and {"warmup", "search"} <= set(report["timings_s"])
    assert "a JVM log line" in err and "a print from a library" in err
    # and after the command, stdout is stdout again
    os.write(1, b"after\n")
    print("print after")
    out, _ = capfd.readouterr()
    assert out == "after\nprint after\n"


@pytest.mark.slow
def test_eval_json_building_a_lucene_index_prints_only_json(toy_dataset, tmp_path):
    pytest.importorskip("pyserini", reason="the lucene extra is not installed")
    env = {**os.environ, "CASCADE_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "cascade", "eval", "--dataset", str(toy_dataset),
                        "--pipeline", "bm25-lucene", "--json"], capture_output=True, text=True, env=env, cwd=ROOT)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)  # raises if Anserini's log lines reached stdout
    assert out["pipeline"] == "bm25-lucene" and out["metrics"]["ndcg@10"] == pytest.approx(1.0)
    assert (tmp_path / "cache" / "indexes").is_dir()


def test_under_a_python_level_capture_the_object_still_reaches_stdout(toy_dataset, capsys):
    """Embedding code (or pytest's capsys) that replaces sys.stdout still gets the object."""
    assert cli.main(["eval", "--dataset", str(toy_dataset), "--pipeline", "bm25", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out)["num_queries"] == 2

"""`cascade collection` as a process, and the load-test script on a toy dataset."""

import json
import os
import subprocess
import sys
from pathlib import Path

from api_helpers import serve

from cascade.api.app import create_app
from cascade.api.settings import Settings
from cascade.eval.benchmarks.load import run_loadtest

ROOT = Path(__file__).resolve().parents[2]


def cascade(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cascade.api.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_collection_cli_creates_fills_and_lists(toy_dataset, tmp_path):
    p = cascade("collection", "create", "toy", "--data-dir", str(tmp_path), "--corpus", str(toy_dataset),
                "--batch-size", "3", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["num_documents"], out["added"], len(out["segments"])) == (4, 4, 1)  # compacted after ingest
    again = json.loads(cascade("collection", "ingest", "toy", "--data-dir", str(tmp_path), "--corpus",
                               str(toy_dataset), "--json").stdout)  # fmt: skip
    assert (again["unchanged"], again["added"]) == (4, 0)
    listed = json.loads(cascade("collection", "list", "--data-dir", str(tmp_path), "--json").stdout)
    assert [c["name"] for c in listed["collections"]] == ["toy"]
    p = cascade("collection", "create", "toy", "--data-dir", str(tmp_path))
    assert p.returncode == 2 and p.stderr.strip() == "cascade: error: collection 'toy' already exists"


def test_loadtest_reports_zero_errors_and_percentiles(toy_dataset, tmp_path):
    with serve(create_app(Settings(data_dir=tmp_path))) as url:
        report = run_loadtest(toy_dataset, "bm25", concurrency=4, requests=40, seconds=20, sequential_requests=10, url=url)
    assert report["num_documents"] == 4
    for phase, n in (("sequential", 10), ("concurrent", 40)):
        r = report[phase]
        assert (r["requests"], r["errors"]) == (n, 0)
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
        assert r["pipeline_ms"]["p50"] <= r["server_ms"]["p50"]
    assert report["overhead_ms_p50"]["server_minus_pipeline"] > 0

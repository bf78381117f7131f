"""``--threads`` as a user runs it: ``cascade eval`` / ``index`` / ``serve`` in real processes, with
what torch, numba and faiss report inside the process after the flag was applied."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import TOY_DOCS
from live_server import cascade_serve

ROOT = Path(__file__).resolve().parents[2]


def on_one_thread(library_threads: dict, *must: str) -> bool:
    """Every library the run loaded ran on one thread, and the ``must`` ones were loaded."""
    return set(must) <= set(library_threads) and all(v == 1 for v in library_threads.values())


def cascade(*args: str, cache: Path, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "CASCADE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cascade.api.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, **popen)  # fmt: skip


def test_eval_runs_on_the_threads_asked_for(toy_dataset, tmp_path):
    p = cascade("eval", "--dataset", str(toy_dataset), "--pipeline", "bm25", "--json", "--threads", "1",
                cache=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    # BM25 runs the numba kernel; torch is not imported just to set its threads
    assert out["threads"] == 1 and on_one_thread(out["library_threads"], "numba") and "torch" not in out["library_threads"]
    assert out["num_queries"] == 2 and out["metrics"]["mrr@10"] == pytest.approx(1.0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_default_is_the_cores_the_process_may_use(toy_dataset, tmp_path):
    """Without --threads: every core the process may run on; pinned to one core, that is one."""
    p = cascade("eval", "--dataset", str(toy_dataset), "--pipeline", "bm25", "--json", cache=tmp_path,
                preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["threads"] == 1 and on_one_thread(out["library_threads"], "numba")


def test_index_takes_threads(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["_id"], "text": d["text"]}) + "\n" for d in TOY_DOCS))
    p = cascade("index", "--corpus", str(corpus), "--out", str(tmp_path / "idx"), "--threads", "1", "--json",
                cache=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {
        "index": str(tmp_path / "idx"),
        "pipeline": "bm25",
        "num_docs": 4,
        "threads": 1,
    }


@pytest.mark.parametrize("bad", ["0", "-1", "1.5", "four"])
def test_bad_threads_is_one_line_exit_2(toy_dataset, tmp_path, bad):
    for args in (("eval", "--dataset", str(toy_dataset), "--pipeline", "bm25"),
                 ("index", "--corpus", str(toy_dataset), "--out", str(tmp_path / "idx")),
                 ("serve", "--data-dir", str(tmp_path / "data"), "--port", "1")):  # fmt: skip
        p = cascade(*args, f"--threads={bad}", cache=tmp_path)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert lines == [f"cascade: error: threads must be a whole number of at least 1, got {bad!r}"], p.stderr
    assert not (tmp_path / "idx").exists()


def test_serve_reports_its_threads(tmp_path):
    with cascade_serve(tmp_path / "data", "--threads", "1") as url:
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
    assert ready["status"] == "ready"
    assert ready["threads"] == 1 and on_one_thread(ready["library_threads"])

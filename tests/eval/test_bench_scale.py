"""``cascade bench scale``: the frame (sizes, measured child processes, curves, JSON) with a
stand-in family, and the BM25 family end to end at the smallest size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.eval.benchmarks import scale
from cascade.eval.benchmarks.scale import FAMILIES, dir_bytes, measured, parse_sizes, series
from cascade.retrieval.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]


def test_parse_sizes():
    assert parse_sizes("100k,1M,8.8M") == [100_000, 1_000_000, 8_800_000]
    assert parse_sizes(20000) == [20000] and parse_sizes([3, "2", 3]) == [2, 3]
    for bad in ("", "ten", "0", "-5"):
        with pytest.raises(InvalidInput):
            parse_sizes(bad)


def _allocate(mb: int) -> int:
    block = b"x" * (mb << 20)  # written, so resident (a zeroed bytearray may not be)
    return len(block)


def _fail(message: str):
    raise InvalidInput(message)


def _crash():
    raise ZeroDivisionError("boom")


def _die():
    os._exit(3)  # as a child killed for memory: no answer at all


def test_measured_runs_in_a_child_and_reports_its_peak():
    ballast = b"x" * (400 << 20)  # the caller's memory: not in a child's peak
    small, big = measured(_allocate, 10), measured(_allocate, 300)
    del ballast
    assert small.result == 10 << 20 and big.result == 300 << 20
    # each child's own peak: the caller's memory is not in it, the allocation is
    assert big.seconds >= 0 and big.peak_bytes >= 300 << 20 > small.peak_bytes
    with pytest.raises(InvalidInput, match="^bad size$"):
        measured(_fail, "bad size")
    with pytest.raises(RuntimeError, match="ZeroDivisionError: boom"):
        measured(_crash)
    with pytest.raises(RuntimeError, match="died in its child process .exit code 3"):
        measured(_die)


def test_dir_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"y" * 5)
    assert dir_bytes(tmp_path) == 15 and dir_bytes(tmp_path / "a") == 10


def _fake_family(sizes, workdir, seed=0, speedup=2.0, **opts):
    rows = []
    for n in sizes:
        rows.append(
            {
                "system": "cascade",
                "size": n,
                "build_s": n / 1e4,
                "peak_gb": 0.1,
                "index_gb": n / 1e6,
                "queries_per_s": speedup * 100,
                "queries_per_s_arrays": speedup * 300,
                "recall@10": 1.0,
            }
        )
        rows.append(
            {
                "system": "ref",
                "size": n,
                "build_s": n / 5e3,
                "peak_gb": 0.5,
                "index_gb": n / 2e6,
                "queries_per_s": 100.0,
                "queries_per_s_2_threads": 180.0,
            }
        )
    return {"family": "fake", "rows": rows, "settings": {"seed": seed, **opts}, "versions": {"ref": "1.0"}}


def test_frame_runs_a_family_and_draws_its_curves(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(FAMILIES._entries, "fake", _fake_family)
    from cascade.eval.bench import run_benchmark

    out = run_benchmark("scale", None, family="fake", sizes="1k,10k", workdir=tmp_path, speedup=3.0)
    assert out["benchmark"] == "scale" and out["sizes"] == [1000, 10000]
    assert out["ratio"] == 3.0 and out["ours"]["name"] == "cascade" and out["baseline"]["name"] == "ref"
    assert out["ours"]["queries_per_s"] == 300.0 and out["baseline"]["queries_per_s_2_threads"] == 180.0
    assert out["settings"] == {"seed": 0} and out["versions"]["ref"] == "1.0"
    names = sorted(Path(p).name for p in out["plots"])
    assert names == ["fake-build.png", "fake-index.png", "fake-memory.png", "fake-qps.png"]
    assert all(Path(p).stat().st_size > 1000 for p in out["plots"])
    assert json.loads(Path(out["results_json"]).read_text())["rows"] == out["rows"]
    qps = series(out["rows"], "queries_per_s")
    assert qps == {"cascade": [(1000.0, 300.0), (10000.0, 300.0)], "cascade, arrays": [(1000.0, 900.0), (10000.0, 900.0)],
                   "ref": [(1000.0, 100.0), (10000.0, 100.0)], "ref, 2 threads": [(1000.0, 180.0), (10000.0, 180.0)]}  # fmt: skip
    with pytest.raises(InvalidInput, match="unknown scale family 'nope'"):
        scale.run(family="nope", workdir=tmp_path)
    with pytest.raises(InvalidInput, match="needs --dataset"):
        run_benchmark("bm25", None)


@pytest.mark.slow
def test_bm25_scale_smallest_size_end_to_end(tmp_path):
    """``cascade bench scale --family bm25 --sizes 20000`` as a user runs it: ours and Lucene
    (skipped without Pyserini) built and searched, the same top 10 for every query, the plots."""
    pytest.importorskip("matplotlib")
    lucene = bool(__import__("importlib").util.find_spec("pyserini"))
    env = {**os.environ, "CASCADE_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "cascade.api.cli", "bench", "scale", "--family", "bm25", "--sizes", "20000",
                        "--opt", "queries=200", "--opt", "rounds=1", "--opt", f"lucene={json.dumps(lucene)}",
                        "--plot", str(tmp_path / "bm25.png"), "--json"],
                       capture_output=True, text=True, env=env, cwd=ROOT)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["benchmark"] == "scale" and out["family"] == "bm25" and out["sizes"] == [20000]
    assert Path(out["workdir"]) == tmp_path / "cache" / "scale"
    ours = next(r for r in out["rows"] if r["system"] == "cascade")
    assert ours["num_docs"] == 20000 and ours["queries"] == 200 and ours["k"] == 1000
    assert 0 < ours["peak_gb"] < 2 and ours["index_gb"] > 0 and ours["queries_per_s"] > 0
    assert sorted(Path(x).name for x in out["plots"]) == ["bm25-build.png", "bm25-index.png", "bm25-memory.png",
                                                          "bm25-qps.png"]  # fmt: skip
    if lucene:
        ref = next(r for r in out["rows"] if r["system"] == "lucene (pyserini)")
        assert ref["build_s"] > 0 and ref["queries_per_s"] > 0 and ref["queries_per_s_2_threads"] > 0
        assert ours["same_top10"] == 1.0  # every sampled query: the same top 10 as Lucene
        assert out["ratio"] == round(ours["queries_per_s"] / ref["queries_per_s"], 3)

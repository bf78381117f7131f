"""``cascade bench bm25`` on a tiny corpus: parity with bm25s and the JSON contract."""

import json
from importlib.metadata import version

import pytest
from bench_data import tiny_beir

pytest.importorskip("bm25s")
pytest.importorskip("rank_bm25")


def test_bm25_bench_parity_and_contract(tmp_path):
    from cascade.eval.bench import run_benchmark

    root = tiny_beir(tmp_path / "ds")
    # bm25s's numba backend compiles for a minute or more on 2 cores: the fast test times its
    # numpy backend; the headline choice is checked on its own below
    out = run_benchmark("bm25", root, ks=[3, 10], rounds=1, build_rounds=1, rank_bm25_queries=2,
                        backends=["numpy"], plot=tmp_path / "bm25.png")  # fmt: skip

    assert json.loads(json.dumps(out)) == out
    assert out["benchmark"] == "bm25" and out["num_docs"] == 60 and out["num_queries"] == 8
    head = "numpy"
    base = out["baseline"]
    assert (
        base["version"] == version("bm25s")
        and "fastest per k: numpy at k=3, numpy at k=10" in base["setting"]
    )
    assert all(r["ratio_arrays"] > 0 for r in out["by_k"])
    assert out["versions"]["bm25s"] == version("bm25s") and out["ours"]["version"] == version(
        "cascade-search"
    )
    assert [r["k"] for r in out["by_k"]] == [3, 10]
    assert all(r["bm25s_fastest"] == head and r["ratio"] == r[f"ratio_vs_bm25s_{head}"] for r in out["by_k"])
    ratios = [r["ratio"] for r in out["by_k"]]
    assert out["ratio"] == min(ratios) > 0 and out["ratio_at_k"] in (3, 10)
    # parity: the same documents with the same scores (bm25s keeps float32) at every k
    for row in out["by_k"]:
        p = row["parity"]
        assert p["against"] == f"bm25s-{head}"
        assert p["same_top_k_ids"] + p["tie_at_cut"] == 8 and p["different_lengths"] == 0, row
        assert p["max_abs_score_diff"] < 1e-4, row
    n = out["by_k"][1]["ndcg@10"]
    assert n["ours"] == n[f"bm25s-{head}"] == out["ours"]["ndcg@10"] == out["baseline"]["ndcg@10"]
    assert out["plots"] == [str(tmp_path / "bm25.png")]
    assert (tmp_path / "bm25.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bm25s_headline_is_its_fastest_installed_backend():
    from cascade.eval.benchmarks.bm25 import bm25s_backends

    pytest.importorskip("numba")
    assert bm25s_backends() == ["numba", "numpy"]

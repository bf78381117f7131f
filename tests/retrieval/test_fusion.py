"""Fusion on small hand-built rankings: exact RRF values, min-max with missing docs, ties."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.fusion import fuse
from cascade.retrieval.types import Ranking

A = Ranking.from_scores("q", ["a", "b", "c"], [9.0, 5.0, 1.0])  # e.g. BM25
B = Ranking.from_scores("q", ["c", "d", "a"], [0.9, 0.8, 0.1])  # e.g. dense


def test_rrf_exact_values():
    fused = fuse([A, B], "rrf", k=60)
    want = {
        "a": 1 / 61 + 1 / 63,
        "c": 1 / 63 + 1 / 61,
        "b": 1 / 62,
        "d": 1 / 62,
    }
    assert dict(zip(fused.doc_ids, fused.scores, strict=True)) == pytest.approx(want, abs=1e-15)
    # a and c tie exactly, as do b and d: ties go to the smaller doc id
    assert fused.doc_ids == ("a", "c", "b", "d")


def test_rrf_weights_and_constant():
    fused = fuse([A, B], "rrf", weights=[2.0, 1.0], k=0)
    scores = dict(zip(fused.doc_ids, fused.scores, strict=True))
    assert scores == pytest.approx({"a": 2 / 1 + 1 / 3, "b": 2 / 2, "c": 2 / 3 + 1 / 1, "d": 1 / 2})
    assert fused.doc_ids == ("a", "c", "b", "d")


def test_minmax_with_missing_documents():
    # A normalized: a=1, b=0.5, c=0 (floor 0); B normalized: c=1, d=0.875, a=0 (floor 0)
    fused = fuse([A, B], "minmax")
    scores = dict(zip(fused.doc_ids, fused.scores, strict=True))
    assert scores == pytest.approx({"a": 1.0, "b": 0.5, "c": 1.0, "d": 0.875})
    assert fused.doc_ids == ("a", "c", "d", "b")


def test_minmax_constant_scores_and_single_hit():
    flat = Ranking.from_scores("q", ["x", "y"], [3.0, 3.0])
    one = Ranking.from_scores("q", ["z"], [7.0])
    fused = fuse([flat, one], "minmax")
    # a list whose scores are all equal normalizes to 1 for every document it holds
    assert dict(zip(fused.doc_ids, fused.scores, strict=True)) == pytest.approx({"x": 2.0, "y": 2.0, "z": 2.0})
    assert fused.doc_ids == ("x", "y", "z")


def test_zscore_missing_document_gets_the_lowest_score_of_its_list():
    fused = fuse([A, B], "zscore")
    scores = dict(zip(fused.doc_ids, fused.scores, strict=True))
    # b is missing from B: it gets B's lowest z-score, which is a's
    assert scores["b"] - scores["a"] == pytest.approx((5.0 - 9.0) / np.std([9.0, 5.0, 1.0]))
    assert fused.doc_ids[0] in {"a", "c"}


def test_tie_break_is_deterministic_whatever_the_input_order():
    x = Ranking("q", ("b", "a", "c"), (1.0, 1.0, 1.0))
    y = Ranking("q", ("c", "a", "b"), (1.0, 1.0, 1.0))
    for method in ("rrf", "minmax", "zscore"):
        one, two = fuse([x, y], method), fuse([y, x], method)
        assert one == two
        if method != "rrf":  # all scores tie: ids ascending
            assert one.doc_ids == ("a", "b", "c")


def test_top_k_and_errors():
    assert fuse([A, B], "rrf", top_k=2).doc_ids == ("a", "c")
    with pytest.raises(InvalidInput, match="unknown fusion"):
        fuse([A, B], "borda")
    with pytest.raises(InvalidInput, match="nothing to fuse"):
        fuse([], "rrf")

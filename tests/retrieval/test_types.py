import numpy as np
import pytest

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.fusion import fuse
from cascade.retrieval.topk import id_ranks, top_k_ranking
from cascade.retrieval.types import Ranking


def test_from_scores_orders_by_score_then_doc_id():
    r = Ranking.from_scores("q", ["c", "a", "b", "d"], [1.0, 2.0, 2.0, 0.5])
    assert r.doc_ids == ("a", "b", "c", "d")
    assert r.scores == (2.0, 2.0, 1.0, 0.5)
    assert Ranking.from_scores("q", ["c", "a", "b"], [1.0, 2.0, 2.0], k=2).doc_ids == ("a", "b")
    assert [h.doc_id for h in r] == list(r.doc_ids)


def test_top_k_keeps_every_tie_at_the_cut():
    ids = ["d9", "d3", "d1", "d7", "d5"]
    scores = np.array([1.0, 3.0, 1.0, 1.0, 2.0], dtype=np.float32)
    r = top_k_ranking("q", np.arange(5), scores, ids, id_ranks(ids), k=3)
    # three documents tie at 1.0 for the last place: the smallest id wins
    assert r.doc_ids == ("d3", "d5", "d1")


def test_rrf_exact_values():
    a = Ranking("q", ("x", "y"), (9.0, 8.0))
    b = Ranking("q", ("y", "z"), (0.9, 0.1))
    fused = fuse([a, b], "rrf", k=60)
    assert fused.doc_ids == ("y", "x", "z")
    assert fused.scores[0] == pytest.approx(1 / 62 + 1 / 61)
    assert fused.scores[1] == pytest.approx(1 / 61)
    assert fused.scores[2] == pytest.approx(1 / 62)


def test_minmax_gives_missing_documents_the_list_floor():
    a = Ranking("q", ("x", "y", "w"), (10.0, 5.0, 0.0))
    b = Ranking("q", ("y", "z"), (4.0, 2.0))
    fused = fuse([a, b], "minmax", weights=[1.0, 2.0])
    scores = dict(zip(fused.doc_ids, fused.scores, strict=True))
    assert scores == pytest.approx({"x": 1.0 + 0.0, "y": 0.5 + 2.0, "z": 0.0 + 0.0, "w": 0.0 + 0.0})
    assert fused.doc_ids == ("y", "x", "w", "z")  # w and z tie: by id


def test_unknown_fusion_lists_valid_names():
    with pytest.raises(InvalidInput, match="rrf"):
        fuse([Ranking("q", (), ())], "borda")

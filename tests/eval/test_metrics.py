import math

import pytest

from cascade.eval.metrics import evaluate, parse_metrics, per_query
from cascade.eval.significance import paired_t_test, randomization_test
from cascade.eval.trec import read_run, write_run
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.types import Ranking

QRELS = {"q1": {"a": 1, "c": 2}, "q2": {"x": 1}}


def test_ndcg_recall_mrr_by_hand():
    run = {"q1": Ranking("q1", ("b", "c", "a"), (3.0, 2.0, 1.0)), "q2": Ranking("q2", ("y",), (1.0,))}
    got = evaluate(run, QRELS, ["ndcg@3", "recall@2", "mrr@10", "map"])
    # trec_eval's nDCG: linear gains (the grade itself), log2(rank + 1) discount
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg@3"] == pytest.approx((dcg / ideal + 0.0) / 2)
    assert got["recall@2"] == pytest.approx((0.5 + 0.0) / 2)
    assert got["mrr@10"] == pytest.approx((1 / 2 + 0.0) / 2)
    assert got["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 0.0) / 2)


def test_queries_missing_from_the_run_count_as_zero():
    run = {"q1": Ranking("q1", ("a", "c"), (2.0, 1.0))}
    assert per_query(run, QRELS, ["recall@10"])["recall@10"] == {"q1": 1.0, "q2": 0.0}


def test_relevance_level_for_binary_metrics():
    run = {"q1": Ranking("q1", ("a", "c"), (2.0, 1.0))}
    assert per_query(run, QRELS, ["mrr@10"], relevance_level=2)["mrr@10"]["q1"] == pytest.approx(0.5)


def test_evaluation_follows_the_returned_order_even_on_ties():
    run = {"q1": Ranking("q1", ("b", "a"), (1.0, 1.0))}
    assert per_query(run, QRELS, ["mrr@10"])["mrr@10"]["q1"] == pytest.approx(0.5)


def test_metric_names():
    assert parse_metrics("nDCG@10, recall@100,map") == ["ndcg@10", "recall@100", "map"]
    for bad in ["ndcg@0", "bleu", "ndcg@x", ""]:
        with pytest.raises(InvalidInput):
            parse_metrics(bad)


def test_trec_run_round_trip(tmp_path):
    run = {"q1": Ranking("q1", ("b", "a"), (2.5, 1.0)), "q2": Ranking("q2", ("x",), (0.5,))}
    write_run(run, tmp_path / "r.trec", tag="t")
    assert (tmp_path / "r.trec").read_text().splitlines()[0] == "q1 Q0 b 1 2.500000 t"
    assert read_run(tmp_path / "r.trec") == run
    (tmp_path / "bad.trec").write_text("q1 Q0 b 1\n")
    with pytest.raises(InvalidInput, match="bad.trec:1"):
        read_run(tmp_path / "bad.trec")


def test_significance_tests():
    a = {str(i): 0.5 + 0.01 * (i % 7) for i in range(60)}
    same = dict(a)
    better = {q: v + 0.1 for q, v in a.items()}
    assert paired_t_test(a, same) == 1.0
    assert randomization_test(a, same) == 1.0
    assert randomization_test(better, a) < 0.001
    assert paired_t_test(better, {q: v + (0.001 if int(q) % 2 else -0.001) for q, v in better.items()}) > 0.05

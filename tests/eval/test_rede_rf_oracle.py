"""``cascade bench rede-rf-oracle``: the qrels as ReDE-RF's judge, against dense alone."""

from cascade.eval.bench import run_benchmark
from cascade.eval.benchmarks.rede_rf import OracleJudge
from cascade.retrieval.types import Document, Query


def test_oracle_judges_by_the_qrels():
    judge = OracleJudge({"q1": {"a": 1, "b": 0}, "q2": {"c": 2}}, level=1)
    docs = [Document("a", "x"), Document("b", "y"), Document("c", "z")]
    assert judge.judge([Query("q1", "?"), Query("q2", "?")], [docs, docs[1:]]) == [
        [True, False, False],
        [False, True],
    ]
    assert OracleJudge({"q2": {"c": 1}}, level=2).judge([Query("q2", "?")], [docs[2:]]) == [[False]]


def test_bench_reports_ours_baseline_and_ratio(toy_dataset):
    out = run_benchmark("rede-rf-oracle", toy_dataset, first="bm25", depth=1)
    assert out["benchmark"] == "rede-rf-oracle" and out["ours"]["name"] == "bm25+rede-rf-oracle@1"
    # BM25's top document is judged relevant for both toy queries (d1 or d3; d4), so both get feedback
    assert out["ours"]["queries_with_a_relevant_candidate"] == 2 == out["ours"]["num_queries"]
    assert set(out["baseline"]) == {"name", "ndcg@10", "recall@100"}
    assert out["ratio"] == round(out["ours"]["ndcg@10"] / out["baseline"]["ndcg@10"], 4)

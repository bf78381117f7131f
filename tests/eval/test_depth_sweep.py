"""Rerank-depth sweeps: each depth's figures equal a separate run of the pipeline at that
depth; the CLI prints one JSON object and a PNG; bad input is one line on stderr."""

import json

import pytest
from collection_data import make_docs, make_queries
from conftest import write_beir
from rerank_models import tiny_bert_cross_encoder

from cascade.api.cli import main
from cascade.eval.datasets import load_dataset
from cascade.eval.depth_sweep import parse_depths, sweep_rerank_depths
from cascade.eval.evaluate import evaluate_pipeline
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.pipeline import PipelineSpec

METRICS = ["ndcg@10", "recall@20", "mrr@10"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 60-document BEIR dataset with 6 graded queries, and a pipeline file: BM25 top 60,
    a tiny random cross-encoder reading the top 10."""
    root = tmp_path_factory.mktemp("sweep")
    docs = make_docs(60)
    queries = [{"_id": f"q{i}", "text": t} for i, t in enumerate(make_queries(6))]
    qrels = [(f"q{i}", f"d{(7 * i + 3 * j) % 60}", 1 + (j == 0)) for i in range(6) for j in range(4)]
    corpus = [{"_id": d.id, "title": d.title, "text": d.text} for d in docs]
    write_beir(root / "data", corpus, queries, qrels)
    model = tiny_bert_cross_encoder(root / "ce")
    spec = {"name": "tiny-ce", "retrievers": [{"retriever": "bm25", "depth": 60}],
            "rerankers": [{"reranker": "cross-encoder", "depth": 10, "params": {"model": str(model)}}], "k": 20}  # fmt: skip
    (root / "tiny-ce.json").write_text(json.dumps(spec))
    return root / "data", PipelineSpec.parse(spec), root / "tiny-ce.json"


def test_each_depth_equals_the_pipeline_run_at_that_depth(tiny):
    data, spec, _ = tiny
    ds = load_dataset(data)
    depths = [3, 10, 25, 60]
    report = sweep_rerank_depths(ds, spec, depths, METRICS)
    assert [d.depth for d in report.depths] == depths and report.reranker == "cross-encoder"
    first, _ = evaluate_pipeline(ds, spec.model_copy(update={"rerankers": []}), METRICS)
    assert report.first_stage == pytest.approx(first.metrics, abs=1e-12)
    for d in report.depths:
        stage = spec.rerankers[0].model_copy(update={"depth": d.depth})
        alone, _ = evaluate_pipeline(ds, spec.model_copy(update={"rerankers": [stage]}), METRICS)
        assert d.metrics == pytest.approx(alone.metrics, abs=1e-12), d.depth
        assert d.candidates_per_query <= d.depth and d.rerank_s > 0
        assert all(0 < s["t_test_p"] <= 1 and 0 < s["randomization_p"] <= 1 for s in d.significance.values())
    read = [d.candidates_per_query for d in report.depths]
    assert read[0] == 3 and read == sorted(read)  # BM25 finds fewer than 60 for some queries
    # the reranker changes the figures, and differently at different depths: the check has teeth
    ndcgs = [d.metrics["ndcg@10"] for d in report.depths]
    assert len(set(ndcgs)) > 1 and any(abs(n - report.first_stage["ndcg@10"]) > 1e-6 for n in ndcgs)


def test_cli_json_and_plot(tiny, tmp_path, capfd):
    data, _, spec_file = tiny
    plot = tmp_path / "sweep.png"
    argv = ["eval", "--dataset", str(data), "--pipeline", str(spec_file), "--rerank-depths", "20,5",
            "--metrics", "ndcg@10,recall@20", "--json", "--plot", str(plot), "--warm"]  # fmt: skip
    assert main(argv) == 0
    stdout = capfd.readouterr().out
    assert len(stdout.strip().splitlines()) == 1
    out = json.loads(stdout)
    assert "warmup" in out["timings_s"]
    assert set(out) == {"dataset", "split", "pipeline", "reranker", "num_queries", "first_stage", "depths",
                        "timings_s", "plot", "threads", "library_threads"}  # fmt: skip
    assert (
        out["pipeline"] == "tiny-ce"
        and out["num_queries"] == 6
        and [d["depth"] for d in out["depths"]] == [5, 20]
    )
    assert set(out["first_stage"]["metrics"]) == {"ndcg@10", "recall@20"}
    for d in out["depths"]:
        assert set(d) == {"depth", "metrics", "rerank_s", "rerank_ms_per_query", "candidates_per_query",
                          "significance"}  # fmt: skip
        assert d["rerank_ms_per_query"] == pytest.approx(1000 * d["rerank_s"] / 6, abs=1e-2)
        assert set(d["significance"]["ndcg@10"]) == {"t_test_p", "randomization_p"}
    assert out["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pipeline", "bm25", "--rerank-depths", "10,20"], "has no reranker stage"),
        (["--pipeline", "bm25+ce", "--rerank-depths", "10,x"], "rerank depth 'x' is not an integer"),
        (["--pipeline", "bm25+ce", "--rerank-depths", "0,10"], "rerank depth 0 is out of range"),
        (["--pipeline", "bm25+ce", "--rerank-depths", "10,10"], "repeat a value"),
        (["--pipeline", "bm25+ce", "--rerank-depths", "10,,20"], "comma-separated integers"),
        (["--pipeline", "bm25+ce", "--plot", "x.png"], "give --rerank-depths too"),
        (["--pipeline", "bm25+ce", "--warm"], "give --rerank-depths too"),
        (
            ["--pipeline", "bm25+ce", "--rerank-depths", "10", "--per-query"],
            "does not combine with --per-query",
        ),
        (["--rerank-depths", "10"], "needs --pipeline"),
    ],
)
def test_bad_input_is_one_line(toy_dataset, capsys, argv, message):
    assert main(["eval", "--dataset", str(toy_dataset), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cascade: error:") and message in err[0], err


def test_parse_depths():
    assert parse_depths("200, 10,50") == [10, 50, 200]
    with pytest.raises(InvalidInput, match="out of range"):
        parse_depths("10001")

"""Real figures on BEIR SciFact: our BM25 against the published Anserini numbers, and
(when Pyserini is installed) against Lucene itself, query by query."""

import pytest

from cascade.eval.datasets import load_dataset
from cascade.eval.metrics import evaluate
from cascade.retrieval.sparse.bm25 import BM25Retriever

# the whole SciFact corpus, and Lucene's JVM for the parity test
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact_run(scifact):
    ds = load_dataset(scifact)
    bm25 = BM25Retriever.build(ds.corpus(), show_progress=False)
    return ds, {r.query_id: r for r in bm25.search(ds.queries, k=100)}


def test_scifact_bm25_reaches_anserini(scifact_run):
    ds, run = scifact_run
    assert len(ds.queries) == 300
    m = evaluate(run, ds.qrels, ["ndcg@10", "recall@100"])
    assert m["ndcg@10"] == pytest.approx(0.6789, abs=5e-4)  # Anserini flat: 0.6789
    assert m["recall@100"] == pytest.approx(0.9253, abs=5e-4)  # Anserini flat: 0.9253


def test_native_bm25_equals_lucene_on_scifact(in_own_process, scifact_run, tmp_path):
    pytest.importorskip("pyserini", reason="the lucene extra is not installed")
    if in_own_process:
        return
    from cascade.retrieval.sparse.analysis import Analyzer
    from cascade.retrieval.sparse.lucene import LuceneBM25Retriever, start_java

    ds, run = scifact_run
    start_java()
    from pyserini.analysis import Analyzer as LuceneAnalyzer
    from pyserini.analysis import get_lucene_analyzer

    # the analyzer: identical terms for every SciFact document and query
    lucene_an, ours_an = LuceneAnalyzer(get_lucene_analyzer()), Analyzer()
    texts = [d.contents for d in ds.corpus()] + [q.text for q in ds.queries]
    assert [t for t in texts if lucene_an.analyze(t) != ours_an(t)] == []

    lucene = LuceneBM25Retriever.build(ds.corpus())
    lucene.save(tmp_path / "lucene")
    lucene = LuceneBM25Retriever.load(tmp_path / "lucene")
    ref = {r.query_id: r for r in lucene.search(ds.queries, k=100)}
    for qid, ranking in run.items():
        assert ranking.doc_ids[:10] == ref[qid].doc_ids[:10], qid
        assert ranking.scores[:10] == pytest.approx(ref[qid].scores[:10], abs=1e-4), qid
    assert evaluate(ref, ds.qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(
        evaluate(run, ds.qrels, ["ndcg@10"])["ndcg@10"], abs=1e-4
    )

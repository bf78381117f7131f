"""ReDE-RF: judgments from a scripted chat server give the mean of the judged-relevant
documents' stored embeddings as the new query vector, and the dense ranking of that vector;
judgments are cached on disk, so a second run asks the server nothing."""

import re

import numpy as np
import pytest
from chat_server import ChatServer
from collection_data import make_docs
from dense_models import tiny_st_dir

from cascade.rerank.rede_rf import ReDERFReranker, parse_judgment
from cascade.retrieval.dense.retriever import DenseRetriever
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.pipeline import Pipeline, PipelineSpec
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.types import Query

DOCS = make_docs(40)
BY_ID = {d.id: d for d in DOCS}
QUERIES = [Query("q0", "stem cell heart w1 w2"), Query("q1", "virus gene protein w3")]
SPEC = PipelineSpec.parse({
    "retrievers": [{"retriever": "bm25", "depth": 6}, {"retriever": "dense", "depth": 6, "weight": 0}],
    "rerankers": [{"reranker": "rede-rf", "depth": 6}], "k": 10,
})  # fmt: skip


class Docs:
    def get_many(self, ids):
        return [BY_ID[i] for i in ids]


@pytest.fixture(scope="module")
def indexes():
    """BM25, and a dense index whose document vectors are seeded random unit vectors (a random
    tiny model maps every text to nearly the same direction, too close to rank by); the tiny
    model stays its query encoder."""
    bm25 = BM25Retriever.build(DOCS)
    built = DenseRetriever.build(DOCS, model=str(tiny_st_dir()), device="cpu", show_progress=False)
    vectors = np.random.default_rng(0).standard_normal((len(DOCS), built.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dense = DenseRetriever.from_vectors(
        built.config, built.doc_ids, vectors, device="cpu", encoder=built.encoder
    )
    return bm25, dense


def judge_by(relevant: set[str]):
    """A server that says true for a passage carrying one of ``relevant``'s unique tokens."""

    def script(i, messages):
        user = messages[-1]["content"]
        tokens = set(re.findall(r"\buniq(d\d+)\b", user))
        assert len(tokens) == 1, user  # one document per request
        return 200, "true" if tokens & relevant else "false"

    return script


def run(indexes, url, cache, model="judge-1", **kw):
    reranker = ReDERFReranker(model, base_url=url, cache=cache, timeout_s=5, **kw)
    return reranker, Pipeline(SPEC, list(indexes), [reranker], docs=Docs())


def test_feedback_vector_and_ranking(indexes, tmp_path):
    bm25, dense = indexes
    first = bm25.search(QUERIES, k=6)
    # q0: two of its BM25 candidates (not among q1's) are relevant; q1: none is
    relevant = set([d for d in first[0].doc_ids[1:] if d not in first[1].doc_ids][:2])
    assert len(relevant) == 2
    with ChatServer(judge_by(relevant)) as srv:
        reranker, pipeline = run(indexes, srv.url, tmp_path / "j.sqlite")
        out = pipeline.search(QUERIES)
        assert len(srv.requests) == 12 and all(p == "/v1/chat/completions" for p, _, _ in srv.requests)
        assert {b["model"] for _, _, b in srv.requests} == {"judge-1"}
        rows = [list(dense.doc_ids).index(d) for d in sorted(relevant)]
        expected = dense.embeddings[rows].mean(axis=0)
        cands = [[BY_ID[d] for d in r.doc_ids] for r in first]
        vectors, found = reranker.feedback_vectors(QUERIES, cands, dense)
        assert found == [True, False] and len(srv.requests) == 12  # the second call hit the cache
    np.testing.assert_allclose(vectors[0], expected, rtol=1e-6)
    # q0: the dense ranking of that vector over the whole index, by brute force
    scores = dense.embeddings @ expected
    order = np.argsort(-scores, kind="stable")[:10]
    assert list(out.rankings[0].doc_ids) == [str(dense.doc_ids[i]) for i in order]
    np.testing.assert_allclose(out.rankings[0].scores, scores[order], rtol=1e-5)
    # q1: nothing relevant, so the first stage's order stands (BM25's: the dense list weighs 0)
    assert out.rankings[1].doc_ids[:6] == first[1].doc_ids


def test_judgments_are_cached_on_disk(indexes, tmp_path):
    bm25, _ = indexes
    relevant = {bm25.search(QUERIES, k=6)[1].doc_ids[0]}
    cache = tmp_path / "judgments.sqlite"
    with ChatServer(judge_by(relevant)) as srv:
        once = run(indexes, srv.url, cache)[1].search(QUERIES)
        asked = len(srv.requests)
        # a new stage (as a new process would build it) over the same cache file: no request
        again = run(indexes, srv.url, cache)[1].search(QUERIES)
        assert len(srv.requests) == asked == 12 and again.rankings == once.rankings
        # another model's judgments are its own
        run(indexes, srv.url, cache, model="judge-2")[1].search(QUERIES)
        assert len(srv.requests) == 24


def test_include_query_averages_the_query_embedding_in(indexes, tmp_path):
    bm25, dense = indexes
    first = bm25.search(QUERIES, k=6)
    relevant = {next(d for d in first[0].doc_ids if d not in first[1].doc_ids)}
    with ChatServer(judge_by(relevant)) as srv:
        reranker, _ = run(indexes, srv.url, False, include_query=True)
        cands = [[BY_ID[d] for d in r.doc_ids] for r in first]
        vectors, _ = reranker.feedback_vectors(QUERIES, cands, dense)
    q = dense.encoder.encode_queries([QUERIES[0].text])[0]
    doc = dense.embeddings[list(dense.doc_ids).index(next(iter(relevant)))]
    np.testing.assert_allclose(vectors[0], (q + doc) / 2, rtol=1e-5, atol=1e-7)


def test_bad_setups(indexes):
    bm25, _ = indexes
    with pytest.raises(InvalidInput, match="needs params.model"):
        ReDERFReranker()
    no_dense = PipelineSpec.parse({"retrievers": [{"retriever": "bm25", "depth": 5}],
                                   "rerankers": [{"reranker": "rede-rf", "depth": 5}]})  # fmt: skip
    stage = ReDERFReranker(judge=object())
    with pytest.raises(InvalidInput, match="needs a dense retriever"):
        Pipeline(no_dense, [bm25], [stage], docs=Docs()).search(QUERIES)
    with pytest.raises(InvalidInput, match="as a stage of a pipeline"):
        stage.rerank_batch(QUERIES, [[], []])
    assert [parse_judgment(a) for a in ["True", " false.", "Yes, it is", "**No**", "maybe", ""]] == [
        True, False, True, False, None, None,
    ]  # fmt: skip

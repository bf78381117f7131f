"""`cascade serve --ray`: the REST API through Ray Serve (router, shard searchers, reranker)
must answer exactly as the single-process server and the single index, over real HTTP."""

import random
import socket

import httpx
import numpy as np
import pytest
from api_helpers import serve as serve_locally
from rerank_models import tiny_bert_cross_encoder

from cascade.api.app import create_app
from cascade.api.settings import Settings
from cascade.eval.presets import resolve_pipeline
from cascade.indexing.docstore import DocStore
from cascade.indexing.index_set import IndexSet
from cascade.retrieval.pipeline import Pipeline, PipelineSpec
from cascade.retrieval.sharded import ShardedRetriever
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.types import Document, Query

pytestmark = pytest.mark.slow  # every test runs on the session's Ray cluster

WORDS = ("stem cell neuron heart blood artery oxygen protein gene tumor immune virus vaccine brain "
         "muscle bone insulin kidney liver lung enzyme receptor membrane signal repair").split()  # fmt: skip
QUERIES = ["stem cell repair", "blood oxygen lung", "tumor immune receptor", "gene enzyme protein", "virus vaccine"]


def corpus() -> list[Document]:
    rng = random.Random(7)
    return [
        Document(f"doc{i:02d}", " ".join(rng.choices(WORDS, k=rng.randint(6, 30))), title=rng.choice(WORDS))
        for i in range(40)
    ]


def rerank_spec(model: str) -> dict:
    return {
        "retrievers": [{"retriever": "bm25", "depth": 12}],
        "rerankers": [{"reranker": "cross-encoder", "depth": 8, "params": {"model": model, "device": "cpu"}}],
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 2-shard bm25 index directory (as `cascade index --shards 2` writes it) and a tiny
    cross-encoder; the settings both servers run with."""
    root = tmp_path_factory.mktemp("ray_serve")
    IndexSet(root / "idx", corpus, shards=2).build(resolve_pipeline("bm25"))
    model = str(tiny_bert_cross_encoder(root / "ce"))
    settings = Settings(
        data_dir=root / "data", indexes={"kb": root / "idx"},
        reranker_params={"cross-encoder": {"model": model, "device": "cpu"}},
    )  # fmt: skip
    return settings, model


@pytest.fixture(scope="module")
def ray_api(ray_cluster, setup):
    from ray import serve

    from cascade.api.ray_serve import RayServeConfig, build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        # fractional CPUs: router, 2 shards and the reranker fit the 2-CPU test cluster
        serve.run(build_app(setup[0], RayServeConfig(replica_cpus=0.25)), name="cascade", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def local_api(setup, tmp_path_factory):
    """The single-process server over the same index directory."""
    settings = setup[0].model_copy(update={"data_dir": tmp_path_factory.mktemp("local_data")})
    with serve_locally(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def search(client, **body) -> dict:
    r = client.post("/v1/search", json={"collection": "kb", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_search_equals_the_single_index_and_the_single_process_server(ray_api, local_api):
    body = {"query": QUERIES, "k": 10}
    got = search(ray_api, **body)
    expected = BM25Retriever.build(corpus(), show_progress=False).search(
        [Query(str(i), q) for i, q in enumerate(QUERIES)], k=10
    )
    for result, ranking in zip(got["results"], expected, strict=True):
        assert [h["doc_id"] for h in result["hits"]] == list(ranking.doc_ids)
        assert [h["score"] for h in result["hits"]] == pytest.approx(ranking.scores, rel=1e-6)
        assert all(h["text"] for h in result["hits"])  # documents come from the docstore
    local = search(local_api, **body)
    assert got["results"] == local["results"]
    assert got["pipeline"] == local["pipeline"] == "bm25"


def test_reranker_stage_and_rerank_endpoint_score_as_the_local_reranker(ray_api, setup):
    from cascade.rerank.cross_encoder import CrossEncoderReranker

    settings, model = setup
    spec = PipelineSpec.parse(rerank_spec(model))
    root = next(iter(settings.indexes.values()))
    sharded = ShardedRetriever.load(IndexSet(root).existing(spec.retrievers[0]))
    reranker = CrossEncoderReranker(model, device="cpu")
    queries = [Query(str(i), q) for i, q in enumerate(QUERIES)]
    expected = Pipeline(spec, [sharded], [reranker], docs=DocStore(root / "docstore.sqlite")).search(queries, k=5)

    got = search(ray_api, query=QUERIES, k=5, pipeline=rerank_spec(model))
    for result, ranking in zip(got["results"], expected.rankings, strict=True):
        assert [h["doc_id"] for h in result["hits"]] == list(ranking.doc_ids)
        assert [h["score"] for h in result["hits"]] == pytest.approx(ranking.scores, rel=1e-5, abs=1e-6)
    assert "rerank:cross-encoder" in got["timings_ms"]

    texts = [d.contents for d in corpus()[:6]]
    r = ray_api.post("/v1/rerank", json={"model": "cross-encoder", "query": QUERIES[0], "documents": texts})
    assert r.status_code == 200, r.text
    scores = reranker.score_pairs([QUERIES[0]] * len(texts), texts)
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], f"{i:08d}"))
    assert [x["index"] for x in r.json()["results"]] == order
    assert [x["relevance_score"] for x in r.json()["results"]] == pytest.approx(np.asarray(scores)[order], rel=1e-5)


def test_context_cites_the_top_documents(ray_api):
    r = ray_api.post("/v1/context", json={"collection": "kb", "query": QUERIES[0], "k": 3, "max_tokens": 4000})
    assert r.status_code == 200, r.text
    top = [h["doc_id"] for h in search(ray_api, query=QUERIES[0], k=3)["results"][0]["hits"]]
    passages = r.json()["passages"]
    assert [p["doc_id"] for p in passages] == top
    assert all(f"[{p['marker']}]" in r.json()["context"] for p in passages)


def test_read_only_index_refuses_writes_and_unknown_names_are_404(ray_api):
    def error(r, status: int) -> dict:
        assert r.status_code == status, r.text
        return r.json()["error"]

    doc = {"documents": [{"id": "new", "text": "stem cells"}]}
    e = error(ray_api.post("/v1/collections/kb/documents", json=doc), 409)
    assert e["type"] == "Conflict" and "read-only" in e["message"]
    assert error(ray_api.post("/v1/collections/kb/delete", json={"ids": ["doc01"]}), 409)["type"] == "Conflict"
    assert "cannot be dropped" in error(ray_api.delete("/v1/collections/kb"), 409)["message"]
    assert error(ray_api.post("/v1/search", json={"collection": "nope", "query": "x"}), 404)["type"] == "NotFound"
    e = error(ray_api.post("/v1/search", json={"collection": "kb", "query": "x", "filter": {"a": 1}}), 422)
    assert "filters are not supported" in e["message"]
    e = error(ray_api.post("/v1/search", json={"collection": "kb", "query": "x", "pipeline": "dense"}), 409)
    assert "has no dense index" in e["message"]
    assert search(ray_api, query="stem", k=40)["results"][0]["hits"]  # still serving
    assert ray_api.get("/v1/collections/kb/documents/doc01").json()["id"] == "doc01"
    assert ray_api.get("/v1/collections/kb").json()["num_documents"] == 40


def test_data_dir_collections_stay_writable_under_ray(ray_api):
    assert ray_api.post("/v1/collections", json={"name": "notes"}).status_code == 201
    docs = [{"id": "a", "text": "kidney repair by stem cells"}, {"id": "b", "text": "heart muscle"}]
    assert ray_api.post("/v1/collections/notes/documents", json={"documents": docs}).json()["added"] == 2
    r = ray_api.post("/v1/search", json={"collection": "notes", "query": "kidney", "k": 5})
    assert [h["doc_id"] for h in r.json()["results"][0]["hits"]] == ["a"]
    assert ray_api.get("/v1/collections").json()["collections"] == ["kb", "notes"]


def test_bad_deployments_are_refused_before_any_replica_starts(ray_cluster, setup, tmp_path):
    import shutil

    from cascade.api.ray_serve import RayServeConfig, build_app
    from cascade.retrieval.errors import IndexMismatch, InvalidInput
    from cascade.retrieval.sharded import shard_name

    settings = setup[0]
    with pytest.raises(InvalidInput, match=r"4 replicas x 1.0 CPUs do not fit the cluster's 2 CPUs"):
        build_app(settings, RayServeConfig(replica_cpus=1.0))
    broken = tmp_path / "idx"
    shutil.copytree(next(iter(settings.indexes.values())), broken)
    shutil.rmtree(next(broken.glob("bm25-*")) / shard_name(1))
    with pytest.raises(IndexMismatch, match="shard-001 is missing"):
        build_app(settings.model_copy(update={"indexes": {"kb": broken}}), RayServeConfig(replica_cpus=0.25))

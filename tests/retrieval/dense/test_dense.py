"""DenseRetriever: exact search, faiss indexes, save/load, resumable builds, chunking, errors."""

from __future__ import annotations

import numpy as np
import pytest

# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")

torch = pytest.importorskip("torch")
faiss = pytest.importorskip("faiss")

from dense_models import tiny_bert_dir  # noqa: E402

from cascade.retrieval.dense.retriever import DenseRetriever, index_factory_string  # noqa: E402
from cascade.retrieval.errors import IndexMismatch, InvalidInput, NotFound  # noqa: E402
from cascade.retrieval.registry import RETRIEVERS  # noqa: E402
from cascade.retrieval.sparse.bm25 import BM25Retriever  # noqa: E402
from cascade.retrieval.types import Document, Query, Ranking  # noqa: E402

torch.set_num_threads(2)
faiss.omp_set_num_threads(1)  # OpenMP spin-waits badly on a shared 2-core machine

WORDS = ("cell protein gene virus vaccine insulin tumor brain heart lung blood bone drug trial risk "
         "mouse human study effect level").split()  # fmt: skip


def _docs(n: int, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(f"d{i:03d}", " ".join(rng.choice(WORDS, size=rng.integers(3, 30))), title=f"t{i % 7}")
        for i in range(n)
    ]


QUERIES = [Query("q1", "insulin and blood"), Query("q2", "tumor gene"), Query("q3", "vaccine trial risk")]


@pytest.fixture(scope="module")
def model() -> str:
    return str(tiny_bert_dir())


@pytest.fixture(scope="module")
def flat(model) -> DenseRetriever:
    # built once for the module, before the per-test fp32_auto: its precision said outright
    return DenseRetriever.build(_docs(120), model=model, device="cpu", dtype="float32", show_progress=False)


def _brute_force(retriever: DenseRetriever, k: int) -> list[Ranking]:
    q = retriever.encoder.encode_queries([q.text for q in QUERIES])
    d = retriever.encoder.encode_documents([doc.contents for doc in _docs(120)])
    scores = q @ d.T
    return [
        Ranking.from_scores(qq.id, retriever.doc_ids, s, k) for qq, s in zip(QUERIES, scores, strict=True)
    ]


def test_registered():
    assert RETRIEVERS.get("dense") is DenseRetriever


def test_flat_search_equals_numpy_brute_force(flat):
    got = flat.search(QUERIES, k=10)
    want = _brute_force(flat, 10)
    for g, w in zip(got, want, strict=True):
        assert g.doc_ids == w.doc_ids
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)


def test_torch_exact_search_equals_faiss(flat):
    from cascade.retrieval.dense.exact import torch_searcher

    q = np.random.default_rng(1).standard_normal((5, flat.dim)).astype(np.float32)
    s1, i1 = torch_searcher(flat.embeddings, torch.device("cpu"))(q, 7)
    s2, i2 = flat._searcher(128, 16)(q, 7)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)


def test_save_load_round_trip(flat, tmp_path):
    flat.save(tmp_path / "idx")
    loaded = DenseRetriever.load(tmp_path / "idx", device="cpu")
    assert isinstance(loaded.embeddings, np.memmap)
    assert loaded.num_docs == 120 and loaded.dim == 32 and loaded.config == flat.config
    assert loaded.search(QUERIES, k=20) == flat.search(QUERIES, k=20)


@pytest.mark.parametrize("index", ["hnsw", "ivf-sq8", "IVF4,PQ8x4"])
def test_faiss_indexes_round_trip_and_recall(flat, model, tmp_path, index):
    approx = DenseRetriever.build(
        _docs(120), model=model, index=index, device="cpu", nprobe=4, show_progress=False
    )
    assert approx.faiss_index is not None and approx.embeddings is None
    got = approx.search(QUERIES, k=10)
    exact = flat.search(QUERIES, k=10)
    recall = np.mean([len(set(g.doc_ids) & set(e.doc_ids)) / 10 for g, e in zip(got, exact, strict=True)])
    assert recall >= (0.9 if "PQ" not in index else 0.3)  # 4-bit PQ of 32 dims is coarse
    approx.save(tmp_path / "idx")
    assert DenseRetriever.load(tmp_path / "idx", device="cpu").search(QUERIES, k=10) == got


def test_index_factory_aliases():
    assert index_factory_string("hnsw", 5183, 384) == "HNSW32"
    assert index_factory_string("ivf-pq", 5183, 384) == "IVF132,PQ96np"
    assert index_factory_string("ivf-sq8", 1_000_000, 384) == "IVF4000,SQ8"
    assert index_factory_string("OPQ16,IVF64,PQ16", 10, 384) == "OPQ16,IVF64,PQ16"


def test_killed_build_resumes_and_gives_the_same_index(model, tmp_path, monkeypatch):
    docs = _docs(40)
    whole = DenseRetriever.build(docs, model=model, device="cpu", show_progress=False)

    def kill_after_second(shard: int) -> None:
        if shard == 1:
            raise KeyboardInterrupt("killed")

    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        DenseRetriever.build(docs, model=model, device="cpu", work_dir=work, shard_size=10,
                             on_shard=kill_after_second, show_progress=False)  # fmt: skip
    assert sorted(p.name for p in work.glob("shard_*")) == ["shard_00000.npz", "shard_00001.npz"]

    from cascade.retrieval.encoders.dense import DenseEncoder

    encoded: list[int] = []
    original = DenseEncoder.encode_documents
    monkeypatch.setattr(
        DenseEncoder, "encode_documents", lambda self, t: encoded.append(len(t)) or original(self, t)
    )
    resumed = DenseRetriever.build(
        docs, model=model, device="cpu", work_dir=work, shard_size=10, show_progress=False
    )
    assert encoded == [10, 10]  # only shards 2 and 3 were encoded again
    np.testing.assert_array_equal(resumed.doc_ids, whole.doc_ids)
    np.testing.assert_allclose(resumed.embeddings, whole.embeddings, atol=1e-6)
    assert resumed.search(QUERIES, k=10) == whole.search(QUERIES, k=10)

    # other settings: the work dir is started over, not mixed in
    encoded.clear()
    DenseRetriever.build(docs, model=model, device="cpu", work_dir=work, shard_size=10,
                         matryoshka_dim=16, show_progress=False)  # fmt: skip
    assert encoded == [10, 10, 10, 10]


@pytest.mark.parametrize("chunking", ["late", "naive"])
def test_chunked_documents_score_by_their_best_chunk(model, chunking):
    docs = _docs(30)
    r = DenseRetriever.build(docs, model=model, device="cpu", chunking=chunking, chunk_size=6,
                             chunk_overlap=2, show_progress=False)  # fmt: skip
    assert r.num_vectors > r.num_docs and r.vec_doc is not None
    q = r.encoder.encode_queries([q.text for q in QUERIES])
    scores = q @ np.asarray(r.embeddings).T
    for query, row, ranking in zip(QUERIES, scores, r.search(QUERIES, k=5), strict=True):
        best = np.full(r.num_docs, -np.inf)
        np.maximum.at(best, r.vec_doc, row)
        want = Ranking.from_scores(query.id, r.doc_ids, best, 5)
        assert ranking.doc_ids == want.doc_ids
        np.testing.assert_allclose(ranking.scores, want.scores, atol=1e-5)


def test_matryoshka_index(model):
    r = DenseRetriever.build(_docs(20), model=model, device="cpu", matryoshka_dim=8, show_progress=False)
    assert r.dim == 8
    np.testing.assert_allclose(np.linalg.norm(r.embeddings, axis=1), 1.0, atol=1e-5)


def test_errors(flat, model, tmp_path):
    with pytest.raises(InvalidInput, match="k must be"):
        flat.search(QUERIES, k=0)
    with pytest.raises(InvalidInput, match="empty"):
        DenseRetriever.build([], model=model, device="cpu", show_progress=False)
    with pytest.raises(InvalidInput, match="duplicate"):
        DenseRetriever.build(_docs(3) + _docs(1), model=model, device="cpu", show_progress=False)
    with pytest.raises(InvalidInput, match="faiss index"):
        DenseRetriever.build(_docs(3), model=model, device="cpu", index="Nonsense9", show_progress=False)
    # an index of another kind
    BM25Retriever.build(_docs(5), show_progress=False).save(tmp_path / "bm25")
    with pytest.raises(IndexMismatch, match="bm25"):
        DenseRetriever.load(tmp_path / "bm25")
    with pytest.raises(NotFound):
        DenseRetriever.load(tmp_path / "nothing-here")
    with pytest.raises(IndexMismatch, match="shape"):
        flat.search_vectors(QUERIES, np.zeros((3, 7), dtype=np.float32))


@pytest.mark.slow  # loads the real MiniLM as the query encoder
def test_query_encoder_of_another_dimension_is_refused(flat, tmp_path):
    flat.save(tmp_path / "dense")
    other = DenseRetriever.load(
        tmp_path / "dense", device="cpu", model="sentence-transformers/all-MiniLM-L6-v2"
    )
    with pytest.raises(IndexMismatch, match="384-dim"):
        other.search(QUERIES)


def test_eval_builds_a_cached_dense_index_once(model, tmp_path, monkeypatch):
    import json

    from cascade.eval.datasets import load_dataset
    from cascade.eval.evaluate import dataset_index_set, evaluate_pipeline
    from cascade.indexing.index_set import stage_key
    from cascade.retrieval.pipeline import PipelineSpec

    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs = _docs(40)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs)
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q.id, "text": q.text}) + "\n" for q in QUERIES)
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td001\t1\nq2\td002\t1\nq3\td003\t1\n"
    )
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    spec = PipelineSpec.parse({"retrievers": [{"retriever": "dense", "depth": 10, "params": {"model": model}}],
                               "k": 10}, name="tiny-dense")  # fmt: skip
    ds = load_dataset(root)
    report, run = evaluate_pipeline(ds, spec, ["ndcg@10"])
    index_dir = dataset_index_set(ds).root / stage_key(spec.retrievers[0])
    assert (index_dir / "manifest.json").is_file()
    assert not any(p.name.endswith(".work") for p in index_dir.parent.iterdir())  # shards cleaned up
    # the same rankings as a direct build and search
    direct = DenseRetriever.build(ds.corpus(), model=model, device="cpu", show_progress=False)
    assert [run[q.id] for q in ds.queries] == direct.search(ds.queries, k=10)
    again, _ = evaluate_pipeline(ds, spec, ["ndcg@10"])
    assert again.metrics == report.metrics

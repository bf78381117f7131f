"""Sharded indexes: N shards must answer exactly as the single index, in process and on Ray."""

import shutil

import pytest

from cascade.eval.datasets import load_dataset
from cascade.retrieval.errors import IndexMismatch
from cascade.retrieval.sharded import ShardedRetriever, shard_name
from cascade.retrieval.sparse.bm25 import BM25Retriever


@pytest.fixture(scope="module")
def scifact_single(scifact):
    ds = load_dataset(scifact)
    bm25 = BM25Retriever.build(ds.corpus(), show_progress=False)
    return ds, bm25.search(ds.queries, k=10)


def assert_same_top10(expected, got):
    assert len(expected) == len(got)
    for a, b in zip(expected, got, strict=True):
        assert a.doc_ids == b.doc_ids, a.query_id
        assert a.scores == pytest.approx(b.scores, rel=1e-6)


@pytest.mark.slow  # the whole SciFact corpus
def test_four_bm25_shards_equal_the_single_index(scifact_single, tmp_path):
    ds, expected = scifact_single
    sharded = ShardedRetriever.build(ds.corpus(), "bm25", num_shards=4, show_progress=False)
    assert all(s.num_docs > 1000 for s in sharded.shards)
    assert sharded.num_docs == 5183
    sharded.save(tmp_path / "s")
    assert_same_top10(expected, ShardedRetriever.load(tmp_path / "s", threads=2).search(ds.queries, k=10))


def test_missing_or_foreign_shard_is_refused(tmp_path):
    from cascade.retrieval.types import Document

    docs = [Document(str(i), f"text number {i} about cells") for i in range(40)]
    ShardedRetriever.build(docs, "bm25", num_shards=3, show_progress=False).save(tmp_path / "a")
    ShardedRetriever.build(docs[:20], "bm25", num_shards=3, show_progress=False).save(tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    shutil.rmtree(tmp_path / "a" / shard_name(2))
    with pytest.raises(IndexMismatch, match="shard-002 is missing"):
        ShardedRetriever.load(tmp_path / "a")
    shutil.rmtree(tmp_path / "c" / shard_name(1))
    shutil.copytree(tmp_path / "b" / shard_name(1), tmp_path / "c" / shard_name(1))
    with pytest.raises(IndexMismatch, match="shard-001 is not the shard this index was built with"):
        ShardedRetriever.load(tmp_path / "c")


@pytest.mark.slow  # a Ray cluster and the whole SciFact corpus
def test_ray_build_equals_single_index_and_survives_a_killed_worker(ray_cluster, scifact_single, scifact, tmp_path):
    from ray_helpers import KilledOnceCorpus

    from cascade.indexing.ray_build import CorpusSource, build_sharded

    ds, expected = scifact_single
    corpus = KilledOnceCorpus(str(scifact / "corpus.jsonl"), "jsonl", {"marker": str(tmp_path / "killed")})
    report = build_sharded(corpus, tmp_path / "s", "bm25", num_shards=4, num_workers=2)
    assert (tmp_path / "killed").exists()  # a worker really died, and its shard was retried
    assert report.built == [0, 1, 2, 3] and report.num_docs == 5183
    assert_same_top10(expected, ShardedRetriever.load(tmp_path / "s").search(ds.queries, k=10))

    # a build that lost one shard resumes with that shard alone
    before = {i: (tmp_path / "s" / shard_name(i) / "manifest.json").stat().st_mtime_ns for i in (0, 1, 3)}
    shutil.rmtree(tmp_path / "s" / shard_name(2))
    report = build_sharded(CorpusSource(str(scifact / "corpus.jsonl")), tmp_path / "s", "bm25", 4, 2)
    assert report.built == [2] and report.skipped == [0, 1, 3]
    assert {i: (tmp_path / "s" / shard_name(i) / "manifest.json").stat().st_mtime_ns for i in (0, 1, 3)} == before
    assert_same_top10(expected, ShardedRetriever.load(tmp_path / "s").search(ds.queries, k=10))

"""The streaming BM25 build against the in-memory one: the same arrays, weights and rankings."""

import json

import numpy as np
import pytest

from cascade.eval.synthetic import CorpusSpec, Synthetic
from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.sparse.bm25 import WEIGHTS_FORMAT_VERSION, BM25Retriever
from cascade.retrieval.sparse.bm25_build import build_streaming
from cascade.retrieval.storage import read_manifest
from cascade.retrieval.types import Document, Query

SPEC = CorpusSpec(seed=3, vocab=3000, topics=40, topic_words=60)


@pytest.fixture(scope="module")
def corpus():
    syn = Synthetic(SPEC)
    docs = list(syn.passages(600))
    # a few with titles (indexed as "title text") and ids out of sorted order (the tie-break)
    docs[5] = Document("zz-5", docs[5].text, title="Heart stem cells")
    docs[17] = Document("a-17", docs[17].text, title="Stem")
    return docs, [*syn.queries(120), Query("unknown", "qqqqzzz"), Query("stop", "the of and")]


ARRAYS = ("indptr", "postings", "tfs", "doc_lens", "doc_ids")


@pytest.mark.parametrize("chunk_docs,merge_postings,workers", [(7, 13, 1), (64, 1, 2), (1000, 10**6, 1)])
def test_streaming_build_equals_in_memory_build(corpus, tmp_path, chunk_docs, merge_postings, workers):
    docs, queries = corpus
    ref = BM25Retriever.build(docs, show_progress=False)
    build_streaming(iter(docs), tmp_path / "idx", chunk_docs=chunk_docs, merge_postings=merge_postings,
                    workers=workers, show_progress=False)  # fmt: skip
    assert read_manifest(tmp_path / "idx").format_version == WEIGHTS_FORMAT_VERSION
    got = BM25Retriever.load(tmp_path / "idx")
    assert got.vocab == ref.vocab
    for name in ARRAYS:
        a, b = getattr(ref, name), getattr(got, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert isinstance(got.postings, np.memmap)  # opened memory-mapped, not read whole
    # the stored weights are the ones the in-memory index computes, bit for bit
    assert np.array_equal(got._matrix.data, ref._matrix.data)
    for engine in ("numba", "scipy"):
        assert got.search(queries, k=50, engine=engine) == ref.search(queries, k=50, engine=engine), engine
    d, s, c = got.search_arrays(queries, k=20)
    rd, rs, rc = ref.search_arrays(queries, k=20)
    assert np.array_equal(d, rd) and np.array_equal(s, rs) and np.array_equal(c, rc)


def test_streaming_okapi_and_k1_override(corpus, tmp_path):
    docs, queries = corpus
    build_streaming(
        docs, tmp_path / "okapi", variant="okapi", k1=1.5, b=0.75, chunk_docs=50, show_progress=False
    )
    ref = BM25Retriever.build(docs, variant="okapi", k1=1.5, b=0.75, show_progress=False)
    got = BM25Retriever.load(tmp_path / "okapi")
    assert np.array_equal(got._matrix.data, ref._matrix.data)
    assert got.search(queries, k=10, engine="scipy") == ref.search(queries, k=10, engine="scipy")
    # k1/b given at load: the stored weights are for the saved ones, so they are recomputed
    build_streaming(docs, tmp_path / "lucene", chunk_docs=50, show_progress=False)
    other = BM25Retriever.load(tmp_path / "lucene", k1=1.2, b=0.75)
    assert other._stored_weights is None
    assert other.search(queries, k=10) == BM25Retriever.build(
        docs, k1=1.2, b=0.75, show_progress=False
    ).search(queries, k=10)


def test_streaming_build_streams_a_generator_and_saves_like_v1(corpus, tmp_path):
    docs, queries = corpus
    manifest = BM25Retriever.build_streaming(
        (d for d in docs), tmp_path / "idx", chunk_docs=100, show_progress=False
    )
    assert manifest.num_docs == len(docs) and "weights.npy" in manifest.files
    got = BM25Retriever.load(tmp_path / "idx")
    got.save(tmp_path / "copy")  # a version-1 copy of a version-2 index: weights computed at load
    again = BM25Retriever.load(tmp_path / "copy")
    assert again._stored_weights is None and read_manifest(tmp_path / "copy").format_version == 1
    assert again.search(queries, k=10) == got.search(queries, k=10)


def test_streaming_build_refuses_bad_input_and_keeps_the_old_index(corpus, tmp_path):
    docs, _ = corpus
    with pytest.raises(InvalidInput, match="empty"):
        build_streaming([], tmp_path / "empty", show_progress=False)
    assert not (tmp_path / "empty").exists()
    build_streaming(docs[:10], tmp_path / "idx", show_progress=False)
    with pytest.raises(InvalidInput, match="duplicate document id"):
        build_streaming(
            [docs[0], docs[1], docs[0]], tmp_path / "idx", chunk_docs=1, workers=2, show_progress=False
        )
    assert BM25Retriever.load(tmp_path / "idx").num_docs == 10  # the failed build replaced nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no runs or temp dirs left
    with pytest.raises(InvalidInput, match="variant"):
        build_streaming(docs, tmp_path / "x", variant="nope", show_progress=False)


def _write_corpus(path, docs, extra_lines=()):
    lines = [json.dumps({"_id": d.id, "title": d.title, "text": d.text}) for d in docs]
    for at, line in extra_lines:
        lines.insert(at, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_streaming_build_from_a_corpus_file_equals_the_document_stream(corpus, tmp_path, workers):
    """The tokenizing processes parse a BEIR corpus.jsonl themselves: the same index."""
    docs, queries = corpus
    path = _write_corpus(tmp_path / "corpus.jsonl", docs, [(100, ""), (300, "   ")])  # blank lines skipped
    build_streaming(path, tmp_path / "file", chunk_docs=64, workers=workers, show_progress=False)
    build_streaming(iter(docs), tmp_path / "docs", chunk_docs=64, show_progress=False)
    got, ref = BM25Retriever.load(tmp_path / "file"), BM25Retriever.load(tmp_path / "docs")
    assert got.vocab == ref.vocab
    for name in (*ARRAYS, "weights"):
        assert np.array_equal(np.load(tmp_path / "file" / f"{name}.npy"), np.load(tmp_path / "docs" / f"{name}.npy"))
    assert got.search(queries, k=10) == ref.search(queries, k=10)


def test_streaming_build_from_a_file_reports_the_bad_line_and_keeps_the_old_index(corpus, tmp_path):
    docs, _ = corpus
    build_streaming(docs[:10], tmp_path / "idx", show_progress=False)
    bad = _write_corpus(tmp_path / "bad.jsonl", docs[:20], [(13, '{"_id": "x", "text": '), (16, "")])
    # batches of 2 lines over 2 processes: the error comes from a worker, with the file's line number
    with pytest.raises(InvalidInput, match=r"bad\.jsonl:14: invalid JSON"):
        build_streaming(bad, tmp_path / "idx", chunk_docs=2, workers=2, show_progress=False)
    no_text = _write_corpus(tmp_path / "no_text.jsonl", docs[:5], [(3, '{"_id": "y"}')])
    with pytest.raises(InvalidInput, match=r"no_text\.jsonl:4: expected an object with '_id' and 'text'"):
        build_streaming(no_text, tmp_path / "idx", show_progress=False)
    dup = _write_corpus(tmp_path / "dup.jsonl", [*docs[:5], docs[2]])
    with pytest.raises(InvalidInput, match=f"duplicate document id {docs[2].id!r}"):
        build_streaming(dup, tmp_path / "idx", chunk_docs=2, workers=2, show_progress=False)
    with pytest.raises(NotFound):
        build_streaming(tmp_path / "missing.jsonl", tmp_path / "idx", show_progress=False)
    assert BM25Retriever.load(tmp_path / "idx").num_docs == 10
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".jsonl")) == ["idx"]

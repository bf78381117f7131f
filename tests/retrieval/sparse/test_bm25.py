import itertools
import json

import numpy as np
import pytest

from cascade.indexing.corpus import read_jsonl
from cascade.retrieval.errors import IndexMismatch, InvalidInput, NotFound
from cascade.retrieval.sparse.bm25 import BM25Retriever, lucene_quantized_length
from cascade.retrieval.storage import MANIFEST
from cascade.retrieval.types import Document, Query

DOCS = [
    Document("a", "stem cells make neurons"),
    Document("b", "the heart pumps blood"),
    Document("c", "stem cell therapy for the heart heart"),
    Document("d", "neurons neurons neurons"),
]


def test_lucene_norm_quantization_matches_smallfloat():
    # values of SmallFloat.byte4ToInt(SmallFloat.intToByte4(x)) in Lucene
    lengths = np.array([0, 1, 23, 24, 25, 40, 41, 100, 1000])
    assert lucene_quantized_length(lengths).tolist() == [0, 1, 23, 24, 25, 40, 40, 96, 984]


def _lucene_score(docs_terms, query_terms, k1=0.9, b=0.4):
    """Lucene's BM25 written out term by term, to check the vectorized index against."""
    n = len(docs_terms)
    lens = np.array([len(t) for t in docs_terms])
    avgdl = lens.sum() / n
    qlen = lucene_quantized_length(lens)
    out = np.zeros(n)
    for term in query_terms:
        df = sum(term in t for t in docs_terms)
        if df == 0:
            continue
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, t in enumerate(docs_terms):
            tf = t.count(term)
            if tf:
                out[i] += idf * tf / (tf + k1 * (1 - b + b * qlen[i] / avgdl))
    return out


def test_exact_ranking_and_scores_on_built_data():
    bm25 = BM25Retriever.build(DOCS, show_progress=False)
    ranking = bm25.search([Query("q", "heart stem")], k=10)[0]
    # b is shorter than a, both match one term of equal idf; d matches nothing and is not returned
    assert ranking.doc_ids == ("c", "b", "a")
    expected = _lucene_score([bm25.analyzer(d.text) for d in DOCS], bm25.analyzer("heart stem"))
    by_id = dict(zip("abcd", expected, strict=True))
    assert ranking.scores == pytest.approx([by_id[d] for d in ranking.doc_ids], rel=1e-6)


def test_lucene_formula_on_scifact_slice(scifact):
    docs = list(itertools.islice(read_jsonl(scifact / "corpus.jsonl"), 300))
    bm25 = BM25Retriever.build(docs, show_progress=False)
    terms = [bm25.analyzer(d.contents) for d in docs]
    for text in ["stem cell differentiation in neurons", "cancer risk of smoking smoking"]:
        expected = _lucene_score(terms, bm25.analyzer(text))
        got = bm25.search([Query("q", text)], k=20)[0]
        idx = {d.id: i for i, d in enumerate(docs)}
        assert got.scores == pytest.approx([expected[idx[d]] for d in got.doc_ids], rel=1e-5)
        assert got.scores[0] == pytest.approx(expected.max(), rel=1e-5)


def test_okapi_variant_matches_rank_bm25(scifact):
    rank_bm25 = pytest.importorskip("rank_bm25")
    docs = list(itertools.islice(read_jsonl(scifact / "corpus.jsonl"), 500))
    ours = BM25Retriever.build(docs, k1=1.5, b=0.75, variant="okapi", show_progress=False)
    ref = rank_bm25.BM25Okapi([ours.analyzer(d.contents) for d in docs], k1=1.5, b=0.75)
    for text in ["stem cell differentiation", "blood pressure blood", "vitamin d deficiency risk"]:
        expected = ref.get_scores(ours.analyzer(text))
        got = ours.search([Query("q", text)], k=50)[0]
        idx = {d.id: i for i, d in enumerate(docs)}
        assert got.scores == pytest.approx([expected[idx[d]] for d in got.doc_ids], rel=1e-5, abs=1e-6)
        top = sorted(expected[expected != 0], reverse=True)[:50]
        assert got.scores == pytest.approx(top, rel=1e-5, abs=1e-6)


def test_save_load_round_trip_and_parameter_override(tmp_path):
    bm25 = BM25Retriever.build(DOCS, show_progress=False)
    bm25.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert manifest["kind"] == "bm25" and manifest["num_docs"] == 4
    loaded = BM25Retriever.load(tmp_path / "idx")
    q = [Query("q", "stem heart neurons")]
    assert loaded.search(q, 10) == bm25.search(q, 10)
    other = BM25Retriever.load(tmp_path / "idx", k1=1.2, b=0.75)
    assert other.search(q, 10)[0].scores != bm25.search(q, 10)[0].scores


def test_bad_input():
    with pytest.raises(InvalidInput, match="duplicate document id 'a'"):
        BM25Retriever.build([DOCS[0], DOCS[0]], show_progress=False)
    with pytest.raises(InvalidInput, match="empty"):
        BM25Retriever.build([], show_progress=False)
    bm25 = BM25Retriever.build(DOCS, show_progress=False)
    with pytest.raises(InvalidInput):
        bm25.search([Query("q", "x")], k=0)
    # a query of stop words or unknown terms has no hits, not an error
    assert len(bm25.search([Query("q", "the of zebra")], k=5)[0]) == 0


def test_refuses_other_kinds_and_versions(tmp_path):
    bm25 = BM25Retriever.build(DOCS, show_progress=False)
    bm25.save(tmp_path / "idx")
    m = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps({**m, "kind": "dense"}))
    with pytest.raises(IndexMismatch, match="'dense' index"):
        BM25Retriever.load(tmp_path / "idx")
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(IndexMismatch, match="format version 99"):
        BM25Retriever.load(tmp_path / "idx")
    with pytest.raises(NotFound):
        BM25Retriever.load(tmp_path / "nothing")


def test_failed_rebuild_leaves_previous_index_intact(tmp_path):
    BM25Retriever.build(DOCS, show_progress=False).save(tmp_path / "idx")

    def broken():
        yield DOCS[0]
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        BM25Retriever.build(broken(), show_progress=False).save(tmp_path / "idx")
    assert BM25Retriever.load(tmp_path / "idx").num_docs == 4
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_compiled_and_scipy_engines_agree(scifact):
    pytest.importorskip("numba")
    docs = list(itertools.islice(read_jsonl(scifact / "corpus.jsonl"), 1000))
    bm25 = BM25Retriever.build(docs, show_progress=False)
    queries = [Query(str(i), d.title) for i, d in enumerate(docs[:50])] + [Query("dup", "cell cell cell")]
    for k in (1, 10, 1000, 2000):
        compiled = bm25.search(queries, k=k, engine="numba")
        reference = bm25.search(queries, k=k, engine="scipy")
        for a, b in zip(compiled, reference, strict=True):
            assert a.doc_ids == b.doc_ids
            assert a.scores == pytest.approx(b.scores, rel=1e-6)
    with pytest.raises(InvalidInput, match="engine"):
        bm25.search(queries, engine="gpu")

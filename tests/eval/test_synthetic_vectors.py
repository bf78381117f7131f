"""Synthetic SPLADE-, MiniLM- and token-vector corpora: determinism, prefixes, and that the
samples keep the fitted statistics (fits made here from small structured data; one slow test
on the real SciFact fit)."""

from pathlib import Path

import numpy as np
import pytest
import synthetic_fits
from synthetic_fits import TOPIC_TERMS, TOPICS

from cascade.eval import synthetic_fit as fits
from cascade.eval import synthetic_vectors as sv
from cascade.retrieval.errors import InvalidInput


@pytest.fixture(scope="module")
def splade_fit():
    return synthetic_fits.splade_fit()


def test_sparse_vectors_are_deterministic_and_prefixes(splade_fit, tmp_path):
    a = sv.splade_vectors(5000, 30, tmp_path / "a", seed=3, fit=splade_fit)
    b = sv.splade_vectors(5000, 30, tmp_path / "b", seed=3, fit=splade_fit)
    assert (a.docs != b.docs).nnz == 0 and (a.queries != b.queries).nnz == 0
    bigger = sv.splade_vectors(9000, 30, tmp_path / "a", seed=3, fit=splade_fit)  # appends chunks
    assert (bigger.docs[:5000] != a.docs).nnz == 0
    other = sv.splade_vectors(5000, 30, tmp_path / "c", seed=4, fit=splade_fit)
    assert (other.docs != a.docs).nnz > 0
    assert a.docs.has_sorted_indices and a.docs.data.min() >= 1


def test_sparse_vectors_keep_the_fitted_statistics(splade_fit, tmp_path):
    v = sv.splade_vectors(8192, 400, tmp_path, fit=splade_fit)
    real_docs = np.diff(splade_fit["doc_ptr"]).mean()
    real_queries = np.diff(splade_fit["query_ptr"]).mean()
    assert abs(v.docs.nnz / v.docs.shape[0] / real_docs - 1) < 0.1
    assert abs(v.queries.nnz / v.queries.shape[0] / real_queries - 1) < 0.1
    # the heaviest weight of each document, as in the real profiles
    real_top = splade_fit["doc_profiles"][splade_fit["doc_ptr"][:-1]].mean()
    gen_top = np.maximum.reduceat(v.docs.data, v.docs.indptr[:-1]).mean()
    assert abs(gen_top / real_top - 1) < 0.1
    # topical co-occurrence: most of a document's terms come from one topic's term set, where
    # uniform noise over the vocabulary would put about 1/10 of them in any one set
    topic_of = np.minimum(v.docs.indices // TOPIC_TERMS, TOPICS)
    rows = np.repeat(np.arange(v.docs.shape[0]), np.diff(v.docs.indptr))
    counts = np.zeros((v.docs.shape[0], TOPICS + 1))
    np.add.at(counts, (rows, topic_of), 1)
    share = counts[:, :TOPICS].max(axis=1) / counts.sum(axis=1)
    assert share.mean() > 0.5


def test_dense_vectors_are_unit_clustered_and_queries_near_their_source(tmp_path):
    rng = np.random.default_rng(0)
    fit = synthetic_fits.minilm_fit()
    docs, queries, src = sv.minilm_vectors(5000, 200, tmp_path, fit=fit)
    again, queries2, _ = sv.minilm_vectors(5000, 200, tmp_path / "again", fit=fit)
    assert np.array_equal(docs, again) and np.array_equal(queries, queries2)
    assert np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-5)
    near = (docs @ fit["centroids"].T).max(axis=1).mean()
    noise = rng.standard_normal(docs.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    assert near > 0.9 and (noise @ fit["centroids"].T).max(axis=1).mean() < 0.5
    cos = np.einsum("nd,nd->n", queries, np.asarray(docs[src]))
    assert abs(cos.mean() - 0.7) < 0.05


def test_token_vectors_follow_the_fitted_lengths(tmp_path):
    fit = synthetic_fits.token_fit()
    lengths = fit["passage_lengths"]
    docs, queries, src = sv.token_vectors(4500, 40, tmp_path, fit=fit)
    assert len(docs) == 4500 and abs(docs.lengths.mean() / lengths.mean() - 1) < 0.1
    assert np.allclose(np.linalg.norm(np.asarray(docs.vectors, np.float32), axis=1), 1, atol=2e-3)
    assert set(queries.lengths.tolist()) <= set(fit["query_lengths"].tolist())
    again, _, _ = sv.token_vectors(4500, 40, tmp_path / "again", fit=fit)
    assert np.array_equal(docs.vectors, again.vectors)
    # a query token is near some token of its source document
    best = [(np.asarray(queries[i], np.float32) @ np.asarray(docs[s], np.float32).T).max(axis=1).mean()
            for i, s in enumerate(src)]  # fmt: skip
    assert np.mean(best) > 0.75


def test_bad_sizes_raise(splade_fit, tmp_path):
    with pytest.raises(InvalidInput):
        sv.splade_vectors(0, 10, tmp_path, fit=splade_fit)


def test_doc_ids_sort_as_indexes():
    ids = sv.doc_ids(12)
    assert ids[0] == "d00000000" and sorted(ids.tolist()) == ids.tolist()


@pytest.mark.long  # encodes all of SciFact with SPLADE-tiny in the test's own cache: minutes
@pytest.mark.skipif(not fits.SCIFACT.is_dir(), reason="SciFact is not in the shared checkout")
def test_real_splade_fit_gives_splade_tiny_lengths(tmp_path: Path):
    """On the real fit (SciFact SPLADE-tiny: about 285 terms per document, 53 per query)."""
    fit = fits.fit_splade()
    v = sv.splade_vectors(4096, 300, tmp_path, fit=fit)
    assert abs(v.docs.nnz / 4096 / np.diff(fit["doc_ptr"]).mean() - 1) < 0.1
    assert 200 < v.docs.nnz / 4096 < 400 and 35 < v.queries.nnz / 300 < 75

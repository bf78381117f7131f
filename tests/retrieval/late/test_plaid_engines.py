"""PLAID's two search engines agree; the Lloyd-Max codec; centroid reuse; the bench's corpus replication."""

from dataclasses import asdict

import numpy as np
import pytest
from plaid_data import corpus as _corpus

from cascade.retrieval.compiled import AVAILABLE
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.late.plaid import HIGH_RECALL, PLAIDIndex, SearchParams
from cascade.retrieval.late.residual import ResidualCodec

needs_numba = pytest.mark.skipif(not AVAILABLE, reason="numba not installed")


@pytest.fixture(scope="module")
def data():
    return _corpus(n_docs=300, n_topics=40, seed=3)


@pytest.fixture(scope="module")
def index(data):
    docs, _, ids = data
    return PLAIDIndex.from_vectors(ids, docs, nbits=2, num_centroids=64, show_progress=False)


SETTINGS = [asdict(SearchParams.for_k(10)), asdict(HIGH_RECALL), asdict(SearchParams.exhaustive()),
            {"ncells": 2, "centroid_score_threshold": 0.3, "ndocs": 40}]  # fmt: skip


@needs_numba
@pytest.mark.parametrize("params", SETTINGS)
@pytest.mark.parametrize("k", [1, 10])
def test_numba_and_torch_engines_agree(index, data, params, k):
    """The batched torch path (what runs on a GPU) and the compiled CPU kernel rank alike."""
    _, queries, _ = data
    s_t, i_t = index.search_vectors(queries, k, engine="torch", batch_size=5, **params)
    s_n, i_n = index.search_vectors(queries, k, engine="numba", **params)
    np.testing.assert_array_equal(i_t, i_n)
    np.testing.assert_allclose(s_t, s_n, atol=1e-4)
    assert (i_n >= 0).all()


@needs_numba
def test_engines_agree_with_stored_vectors(data):
    docs, queries, ids = data
    index = PLAIDIndex.from_vectors(ids, docs, nbits=1, num_centroids=64, store_vectors=True, show_progress=False)
    for params in SETTINGS[:2]:
        s_t, i_t = index.search_vectors(queries, 10, engine="torch", **params)
        s_n, i_n = index.search_vectors(queries, 10, engine="numba", **params)
        np.testing.assert_array_equal(i_t, i_n)
        np.testing.assert_allclose(s_t, s_n, atol=1e-4)


def test_unknown_engine_is_refused(index, data):
    with pytest.raises(InvalidInput, match="engine"):
        index.search_vectors(data[1], 10, engine="faiss")


def test_lloyd_max_codec_matches_the_gaussian_tables():
    """Max (1960): the optimal 2-bit quantizer of N(0, 1) has cutoffs 0, +-0.9816, levels +-0.4528,
    +-1.510 and MSE 0.1175; 4 bits: MSE 0.009497. ColBERTv2's quantile buckets do worse."""
    x = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)

    def mse(codec):
        return float(((codec.weights[np.searchsorted(codec.cutoffs, x, side="right")] - x) ** 2).mean())

    two = ResidualCodec.fit(x, 2)
    np.testing.assert_allclose(two.cutoffs, [-0.9816, 0.0, 0.9816], atol=0.01)
    np.testing.assert_allclose(two.weights, [-1.510, -0.4528, 0.4528, 1.510], atol=0.01)
    assert abs(mse(two) - 0.1175) < 0.002
    assert abs(mse(ResidualCodec.fit(x, 4)) - 0.009497) < 0.0005
    for nbits in (1, 2, 4):
        assert mse(ResidualCodec.fit(x, nbits)) < mse(ResidualCodec.fit(x, nbits, iters=0))


@pytest.mark.parametrize("nbits", [2, 4])
def test_decompression_error_bound(data, nbits):
    """Each decoded value is its bucket's mean, inside the bucket: an inner value errs by at most
    the widest inner bucket; the normalized vectors stay close to the originals."""
    docs, _, ids = data
    index = PLAIDIndex.from_vectors(ids, docs, nbits=nbits, num_centroids=64, show_progress=False)
    codec = index.codec
    assert np.all(np.diff(codec.cutoffs) > 0)
    assert np.all((codec.weights[1:-1] > codec.cutoffs[:-1]) & (codec.weights[1:-1] < codec.cutoffs[1:]))
    dec = index.decompressed().vectors
    orig = np.asarray(docs.vectors, np.float32)
    cos = (dec * orig).sum(1)
    assert cos.mean() > (0.99 if nbits == 4 else 0.96)


def test_reused_centroids_give_the_same_codes(index, data):
    docs, queries, ids = data
    other = PLAIDIndex.from_vectors(ids, docs, nbits=4, centroids=index.centroids, show_progress=False)
    np.testing.assert_array_equal(other.codes, index.codes)
    np.testing.assert_array_equal(other.centroids, index.centroids)
    assert other.nbits == 4 and other.build_info["kmeans_iters"] == 0
    with pytest.raises(InvalidInput, match="centroids"):
        PLAIDIndex.from_vectors(ids, docs, centroids=np.zeros((4, 7)), show_progress=False)


def test_replicate_makes_noisy_copies(data):
    from cascade.eval.benchmarks.plaid import replicate

    docs, _, ids = data
    few_ids, few = replicate(ids, docs, 10)
    assert list(few_ids) == list(ids[:10]) and len(few) == 10
    big_ids, big = replicate(ids, docs, 700, noise=0.3)
    assert len(big) == 700 and len(set(big_ids)) == 700 and big_ids[300] == f"{ids[0]}#1"
    np.testing.assert_allclose(big[5], docs[5], atol=1e-3)  # originals kept (as fp16)
    copy, orig = np.asarray(big[300 + 7], np.float32), np.asarray(docs[7], np.float32)
    cos = (copy * orig).sum(1)
    assert copy.shape == orig.shape and 0.9 < cos.mean() < 0.995
    np.testing.assert_allclose(np.linalg.norm(copy, axis=1), 1, atol=1e-2)

"""PLAID engine on small built data: exactness, compression, k-means, updates, persistence."""

from dataclasses import asdict

import numpy as np
import pytest
import torch
from plaid_data import DIM
from plaid_data import corpus as _corpus
from plaid_data import unit as _unit

from cascade.retrieval.encoders.colbert import MultiVectors
from cascade.retrieval.encoders.token_vectors import prune_tokens
from cascade.retrieval.errors import IndexMismatch, InvalidInput, NotFound
from cascade.retrieval.late.kmeans import assign, default_num_centroids, kmeans
from cascade.retrieval.late.maxsim import MaxSim
from cascade.retrieval.late.plaid import PLAIDIndex, SearchParams
from cascade.retrieval.late.residual import ResidualCodec
from cascade.retrieval.registry import RETRIEVERS

EXHAUSTIVE = asdict(SearchParams.exhaustive())


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return _corpus()


@pytest.fixture(scope="module")
def index(data):
    docs, _, ids = data
    return PLAIDIndex.from_vectors(ids, docs, nbits=2, num_centroids=64, kmeans_iters=4, show_progress=False)


def _recall(a, b):
    return np.mean([len(set(x[x >= 0]) & set(y)) / len(y) for x, y in zip(a, b, strict=True)])


def test_registered_as_colbert():
    assert RETRIEVERS.get("colbert") is PLAIDIndex
    assert default_num_centroids(1_240_000) == 16384


def test_exhaustive_settings_equal_exact_maxsim_on_decompressed(index, data):
    _, queries, _ = data
    scores, idx = index.search_vectors(queries, 10, **EXHAUSTIVE)
    ref_scores, ref_idx = MaxSim(index.decompressed()).search(queries, 10)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)


def test_more_bits_score_closer_to_uncompressed_maxsim(data):
    docs, queries, ids = data
    exact = MaxSim(docs).scores(queries).numpy()
    errors = []
    for nbits in (1, 2, 4):
        idx = PLAIDIndex.from_vectors(ids, docs, nbits=nbits, num_centroids=64, show_progress=False)
        errors.append(np.abs(MaxSim(idx.decompressed()).scores(queries).numpy() - exact).mean())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01 * queries.lengths.max()  # 4 bits: under 1% of a query's max score


def test_default_plaid_settings_find_most_of_exact_top10(index, data):
    _, queries, _ = data
    _, got = index.search_vectors(queries, 10)  # ncells 1, threshold 0.5, ndocs 256
    _, ref = index.search_vectors(queries, 10, **EXHAUSTIVE)
    assert _recall(got, ref) >= 0.8
    # pruning every centroid still ranks (by full bags in stage 3), it only loses candidates' order
    _, pruned = index.search_vectors(queries, 10, centroid_score_threshold=2.0, ncells=64, ndocs=10_000)
    assert _recall(pruned, ref) == 1.0


def test_stored_vectors_make_the_last_stage_exact(data, tmp_path):
    docs, queries, ids = data
    idx = PLAIDIndex.from_vectors(ids, docs, nbits=1, num_centroids=64, store_vectors=True, show_progress=False)
    ref_s, ref_i = MaxSim(docs).search(queries, 10)
    s, i = idx.search_vectors(queries, 10, **EXHAUSTIVE)
    np.testing.assert_array_equal(i, ref_i)  # 1-bit residuals, yet exact: scored on the originals
    np.testing.assert_allclose(s, ref_s, atol=1e-3)
    idx.delete(["d0"])
    idx.add_vectors(["d0"], MultiVectors.from_list([docs[0]]))
    idx.save(tmp_path / "v")
    _, i2 = PLAIDIndex.load(tmp_path / "v").search_vectors(queries, 10, **EXHAUSTIVE)
    np.testing.assert_array_equal(np.where(i2 == len(ids) - 1, 0, np.where(i2 >= 0, i2 + 1, -1)), ref_i)


def test_defaults_per_k():
    assert SearchParams.for_k(10) == SearchParams(1, 0.5, 256)
    assert SearchParams.for_k(100) == SearchParams(2, 0.45, 1024)
    assert SearchParams.for_k(2000) == SearchParams(4, 0.4, 8000)


@pytest.mark.parametrize("nbits,max_mae", [(1, 0.65), (2, 0.36), (4, 0.10)])
def test_compression_round_trip_error(nbits, max_mae):
    rng = np.random.default_rng(nbits)
    res = rng.standard_normal((4000, DIM)).astype(np.float32)
    codec = ResidualCodec.fit(res, nbits)
    packed = codec.compress(res)
    assert packed.dtype == np.uint8 and packed.shape == (4000, DIM * nbits // 8)
    decoded = codec.lookup_table()[packed].reshape(4000, DIM)
    # bit-exact: each value decodes to the weight of the bucket its cutoffs put it in
    np.testing.assert_array_equal(decoded, codec.weights[np.searchsorted(codec.cutoffs, res, side="right")])
    err = np.abs(decoded - res)
    assert err.mean() < max_mae  # in units of the residual's std (1 here)
    inside = (res > codec.cutoffs[0]) & (res < codec.cutoffs[-1])
    if nbits > 1:
        assert err[inside].max() <= np.diff(codec.cutoffs).max() + 1e-6


def test_compression_rejects_bad_nbits_and_dim():
    with pytest.raises(InvalidInput, match="nbits"):
        ResidualCodec.fit(np.zeros((4, 8)), 3)
    with pytest.raises(InvalidInput, match="multiple"):
        ResidualCodec.fit(np.random.rand(4, 6), 1).compress(np.random.rand(4, 6))


def test_kmeans_is_deterministic_and_converges():
    rng = np.random.default_rng(0)
    centers = _unit(rng.standard_normal((8, DIM)))
    x = _unit(np.repeat(centers, 50, axis=0) + 0.05 * rng.standard_normal((400, DIM)))
    a, b = kmeans(x, 24, iters=10, seed=1), kmeans(x, 24, iters=10, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, kmeans(x, 24, iters=10, seed=2))
    np.testing.assert_allclose(torch.linalg.norm(a, dim=1).numpy(), 1.0, atol=1e-5)
    assert (centers @ a.numpy().T).max(axis=1).min() > 0.98  # each true center was found
    # Lloyd iterations never lower the objective (sum of each point's best cosine)
    objective = [(x @ kmeans(x, 6, iters=i, seed=0).numpy().T).max(axis=1).sum() for i in (0, 1, 2, 4, 8)]
    assert all(later >= earlier - 1e-3 for earlier, later in zip(objective, objective[1:], strict=False))
    assert objective[-1] > objective[0]
    with pytest.raises(InvalidInput):
        kmeans(x[:4], 8)


def test_two_level_assignment_matches_exact_on_clustered_centroids():
    g = torch.Generator().manual_seed(0)
    tops = torch.nn.functional.normalize(torch.randn(64, DIM, generator=g), dim=1)
    cents = torch.nn.functional.normalize(tops.repeat_interleave(64, 0) + 0.3 * torch.randn(4096, DIM, generator=g), dim=1)
    pts = torch.nn.functional.normalize(cents[torch.randint(0, 4096, (3000,), generator=g)]
                                        + 0.1 * torch.randn(3000, DIM, generator=g), dim=1)  # fmt: skip
    exact = assign(pts, cents, two_level_from=1 << 62)
    two = assign(pts, cents, nprobe=8)  # 4096 centroids: two-level
    assert torch.equal(two, assign(pts, cents, nprobe=8))  # deterministic
    assert (two == exact).float().mean() >= 0.97
    got, best = (pts * cents[two]).sum(1), (pts * cents[exact]).sum(1)
    assert (got <= best + 1e-6).all() and (best - got).mean() < 0.01


def test_build_is_deterministic(data, index):
    docs, queries, ids = data
    again = PLAIDIndex.from_vectors(ids, docs, nbits=2, num_centroids=64, kmeans_iters=4, show_progress=False)
    np.testing.assert_array_equal(again.codes, index.codes)
    np.testing.assert_array_equal(again.residuals, index.residuals)


def test_delete_then_add_back(data):
    docs, queries, ids = data
    idx = PLAIDIndex.from_vectors(ids, docs, nbits=2, num_centroids=64, show_progress=False)
    before_s, before = idx.search_vectors(queries, 10, **EXHAUSTIVE)
    gone = [int(i) for i in np.unique(before[:, :2])]  # the best hits: deleting them changes results
    idx.delete(ids[gone])
    assert idx.num_docs == len(ids) - len(gone)
    _, after = idx.search_vectors(queries, 10, **EXHAUSTIVE)
    assert not set(ids[gone]) & set(idx.doc_ids[after[after >= 0]])
    ref_s, ref = MaxSim(idx.decompressed()).search(queries, 10)
    np.testing.assert_array_equal(after, ref)
    # adding them back (same centroids and buckets) restores the same hits and scores
    idx.add_vectors(ids[gone], MultiVectors.from_list([docs[i] for i in gone]))
    s, back = idx.search_vectors(queries, 10, **EXHAUSTIVE)
    np.testing.assert_array_equal(idx.doc_ids[back], ids[before])
    np.testing.assert_allclose(s, before_s, atol=1e-5)


def test_update_errors(index, data):
    docs, _, ids = data
    with pytest.raises(NotFound, match="nope1, nope2"):
        index.delete(["d1", "nope1", "nope2"])
    assert "d1" in index.doc_ids  # nothing deleted
    with pytest.raises(InvalidInput, match="d3"):
        index.add_vectors(["d3"], MultiVectors.from_list([docs[3]]))
    with pytest.raises(IndexMismatch, match="dim"):
        index.add_vectors(["new"], MultiVectors.from_list([np.ones((2, DIM * 2), np.float32)]))
    with pytest.raises(IndexMismatch, match="dim"):
        index.search_vectors(MultiVectors.from_list([np.ones((2, 8), np.float32)]), 5)


def test_save_load_round_trip(index, data, tmp_path):
    _, queries, _ = data
    index.save(tmp_path / "idx")
    loaded = PLAIDIndex.load(tmp_path / "idx")
    assert isinstance(loaded.residuals, np.memmap)
    for params in ({}, EXHAUSTIVE):
        a = index.search_vectors(queries, 10, **params)
        b = loaded.search_vectors(queries, 10, **params)
        np.testing.assert_array_equal(a[1], b[1])
    assert loaded.nbytes() == index.nbytes()
    with pytest.raises(IndexMismatch, match="nbits=2, not nbits=4"):
        PLAIDIndex.load(tmp_path / "idx", nbits=4)
    with pytest.raises(IndexMismatch, match="dim=32, not dim=128"):
        PLAIDIndex.load(tmp_path / "idx", dim=128)


def test_token_pruning_bounds_maxsim_change():
    docs, queries, ids = _corpus(n_docs=60, seed=3)
    dup = MultiVectors.from_list([np.concatenate([d, d[:2]]) for d in (docs[i] for i in range(len(docs)))])
    exact_dups = prune_tokens(dup, 0.9999)
    assert (exact_dups.lengths <= docs.lengths).all()
    t = 0.8
    pruned = prune_tokens(docs, t)
    assert pruned.lengths.sum() < docs.lengths.sum() and (pruned.lengths >= 1).all()
    full, small = MaxSim(docs).scores(queries).numpy(), MaxSim(pruned).scores(queries).numpy()
    assert (small <= full + 1e-5).all()
    assert (full - small).max() <= queries.lengths.max() * np.sqrt(2 - 2 * t) + 1e-5
    idx = PLAIDIndex.from_vectors(ids, docs, nbits=2, num_centroids=32, prune_threshold=t, show_progress=False)
    assert idx.num_embeddings == pruned.lengths.sum()


def test_input_errors(data):
    docs, _, ids = data
    with pytest.raises(InvalidInput, match="duplicate"):
        PLAIDIndex.from_vectors(np.array(["a"] * len(ids)), docs, show_progress=False)
    with pytest.raises(InvalidInput, match="nbits"):
        PLAIDIndex.from_vectors(ids, docs, nbits=3, show_progress=False)

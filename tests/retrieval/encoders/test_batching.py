"""The one batcher every encoder and reranker uses: budgets, row caps, order, padding."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cascade.retrieval.encoders.batching import BatchPolicy, pad_batch, restore_order, token_budget_batches
from cascade.retrieval.errors import InvalidInput


def _lengths(seed: int = 0, n: int = 500, high: int = 300) -> np.ndarray:
    # few distinct lengths, so equal lengths (ties) are common
    return np.random.default_rng(seed).integers(1, high, size=n) // 10 * 10 + 1


@pytest.mark.parametrize(("max_tokens", "cap"), [(2000, 64), (1024, 8), (50, 256)])
def test_batches_cover_every_index_once_within_budget_and_cap(max_tokens, cap):
    lengths = _lengths()
    batches = token_budget_batches(lengths, max_tokens=max_tokens, max_batch_size=cap)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= cap
        assert len(b) == 1 or len(b) * lengths[b].max() <= max_tokens
    # longest first: the concatenated batches are the length-sorted order, ties in input order
    assert flat.tolist() == np.argsort(-lengths, kind="stable").tolist()
    assert all(np.all(np.diff(lengths[b]) <= 0) for b in batches)


def test_short_sequences_travel_in_bigger_batches():
    lengths = np.r_[np.full(10, 200), np.full(100, 10)]
    batches = token_budget_batches(lengths, max_tokens=400, max_batch_size=64)
    assert [len(b) for b in batches] == [2] * 5 + [40, 40, 20]


def test_a_sequence_over_the_budget_gets_a_batch_of_its_own():
    assert [b.tolist() for b in token_budget_batches([5000, 3], max_tokens=100)] == [[0], [1]]
    # an empty sequence counts as one token, so the budget still caps its batch
    empty = token_budget_batches([0, 0, 0], max_tokens=2, max_batch_size=8)
    assert [b.tolist() for b in empty] == [[0, 1], [2]]


def test_no_token_budget_means_fixed_size_batches_of_the_sorted_order():
    lengths = _lengths(1, n=103)
    batches = token_budget_batches(lengths, max_tokens=None, max_batch_size=10)
    order = np.argsort(-lengths, kind="stable")
    assert [b.tolist() for b in batches] == [order[i : i + 10].tolist() for i in range(0, 103, 10)]


def test_bad_budgets_and_empty_input():
    assert token_budget_batches([], max_tokens=10) == []
    for kw in ({"max_tokens": 0}, {"max_batch_size": 0}, {"max_tokens": None, "max_batch_size": 0}):
        with pytest.raises(InvalidInput):
            token_budget_batches([1], **kw)


def test_policy_budget_defaults_to_full_length_batches_and_is_validated():
    policy = BatchPolicy(batch_size=8, max_length=64)
    assert policy.budget == 512
    lengths = _lengths(2, high=64)
    assert [b.tolist() for b in policy.batches(lengths)] == [
        b.tolist() for b in token_budget_batches(lengths, max_tokens=512, max_batch_size=8)
    ]
    assert BatchPolicy(batch_size=8, token_budget=100, max_length=64).budget == 100
    for kw in ({"batch_size": 0}, {"max_length": 1}, {"token_budget": 63, "max_length": 64}):
        with pytest.raises(InvalidInput):
            BatchPolicy(**kw)


def test_restore_order_puts_batch_results_back_in_input_order():
    lengths = _lengths(3, n=50)
    batches = token_budget_batches(lengths, max_tokens=200, max_batch_size=8)
    computed = np.concatenate([lengths[b] * 2 for b in batches])  # per-batch results, batch order
    np.testing.assert_array_equal(restore_order(batches, computed), lengths * 2)
    as_list = [f"row{i}" for b in batches for i in b]
    assert restore_order(batches, as_list) == [f"row{i}" for i in range(50)]
    matrix = sp.csr_matrix(computed[:, None].astype(np.float32))
    np.testing.assert_array_equal(restore_order(batches, matrix).toarray()[:, 0], lengths * 2)
    # offset batches (chunks of a larger input) work the same
    shifted = [b + 50 for b in batches]
    np.testing.assert_array_equal(restore_order([np.arange(50)] + shifted, np.r_[np.arange(50), computed]),
                                  np.r_[np.arange(50), lengths * 2])  # fmt: skip
    assert restore_order([], []) == []


def test_pad_batch_right_left_fixed_width_and_empty_rows():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == np.int64
    ids, mask = pad_batch([[5, 6, 7], [8], []], pad_id=9, left=True)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    ids, mask = pad_batch([[5], [6, 7]], pad_id=1, width=4, dtype=np.int32)
    assert ids.tolist() == [[5, 1, 1, 1], [6, 7, 1, 1]] and ids.dtype == np.int32
    assert mask.sum(1).tolist() == [1, 2]
    assert pad_batch([], pad_id=0)[0].shape == (0, 0)
    with pytest.raises(InvalidInput, match="width"):
        pad_batch([[1, 2, 3]], pad_id=0, width=2)

"""Length-sorted, token-budget batching for any transformer encoder.

Sorting sequences by length before batching means each batch pads to nearly its own
length, and capping a batch by its padded token count (``rows x longest``) rather than by
its row count keeps memory use flat: short texts go in large batches, long ones in small
batches. Dense, sparse and late-interaction encoders all batch through these two helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cascade.retrieval.errors import InvalidInput


def token_budget_batches(
    lengths: Sequence[int] | np.ndarray, max_tokens: int = 16384, max_batch_size: int = 256
) -> list[np.ndarray]:
    """Group sequence indices into batches, longest first, each under a padded-token budget.

    Args:
        lengths: the token count of every sequence.
        max_tokens: cap on ``len(batch) * max(lengths in batch)``; a sequence longer than the
            budget still gets a batch of its own.
        max_batch_size: cap on the rows of a batch.

    Returns:
        A list of index arrays into ``lengths``; together they hold every index once.
        Longest batches come first, so an out-of-memory error shows up at once.

    Raises:
        InvalidInput: a non-positive budget or batch size.

    Example:
        >>> [b.tolist() for b in token_budget_batches([3, 10, 4, 9], max_tokens=20)]
        [[1, 3], [2, 0]]
    """
    if max_tokens < 1 or max_batch_size < 1:
        raise InvalidInput(f"max_tokens and max_batch_size must be >= 1, got {max_tokens}, {max_batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    # stable sort on -length: equal lengths keep input order, so batches are reproducible
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])  # sorted descending: the first row is the longest
        rows = max(1, min(max_batch_size, max_tokens // max(longest, 1)))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, dtype: type = np.int64
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists into ``(ids, attention_mask)`` arrays of shape (rows, longest)."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=dtype)
    mask = np.zeros((len(sequences), longest), dtype=dtype)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask

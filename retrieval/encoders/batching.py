"""Length-sorted, token-budget batching for every transformer in the library.

Sorting sequences by length before batching means each batch pads to nearly its own
length, and capping a batch by its padded token count (``rows x longest``) rather than by
its row count keeps memory use flat: short texts go in large batches, long ones in small
batches. Dense, sparse and late-interaction encoders and the pointwise and listwise
rerankers all batch through these helpers: :func:`token_budget_batches` picks the rows of
each batch, :func:`pad_batch` pads them, and :func:`restore_order` puts per-batch results
back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from cascade.retrieval.errors import InvalidInput

R = TypeVar("R")


@dataclass(frozen=True)
class BatchPolicy:
    """How a model's inputs are grouped into calls, for models that truncate to ``max_length``.

    Args:
        batch_size: most rows in one batch.
        token_budget: most padded tokens (rows x longest row) in one batch; ``None`` means
            ``batch_size * max_length``, the memory a count-based batch of full-length rows takes.
        max_length: tokens per row after truncation.

    Raises:
        InvalidInput: a batch size under 1, a max length under 2, or a budget that cannot
            hold one row of ``max_length``.
    """

    batch_size: int = 32
    token_budget: int | None = None
    max_length: int = 512

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInput(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_length < 2:
            raise InvalidInput(f"max_length must be >= 2, got {self.max_length}")
        if self.token_budget is not None and self.token_budget < self.max_length:
            raise InvalidInput(
                f"token_budget ({self.token_budget}) must hold at least one row of max_length {self.max_length}"
            )

    @property
    def budget(self) -> int:
        """The padded-token cap of a batch, ``token_budget`` or its default."""
        return self.token_budget if self.token_budget is not None else self.batch_size * self.max_length

    def batches(self, lengths: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """:func:`token_budget_batches` under this policy's budget and row cap."""
        return token_budget_batches(lengths, self.budget, self.batch_size)


def token_budget_batches(
    lengths: Sequence[int] | np.ndarray, max_tokens: int | None = 16384, max_batch_size: int = 256
) -> list[np.ndarray]:
    """Group sequence indices into batches, longest first, each under a padded-token budget.

    Args:
        lengths: the token count of every sequence.
        max_tokens: cap on ``len(batch) * max(lengths in batch)``; a sequence longer than the
            budget still gets a batch of its own. ``None``: no token cap, so batches are
            ``max_batch_size`` rows of the length-sorted order.
        max_batch_size: cap on the rows of a batch.

    Returns:
        A list of index arrays into ``lengths``; together they hold every index once. Each
        batch's rows are in descending length order and longest batches come first, so an
        out-of-memory error shows up at once. Equal lengths keep their input order, so the
        batches are the same on every run.

    Raises:
        InvalidInput: a non-positive budget or batch size.

    Example:
        >>> [b.tolist() for b in token_budget_batches([3, 10, 4, 9], max_tokens=20)]
        [[1, 3], [2, 0]]
    """
    if (max_tokens is not None and max_tokens < 1) or max_batch_size < 1:
        raise InvalidInput(f"max_tokens and max_batch_size must be >= 1, got {max_tokens}, {max_batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    # stable sort on -length: equal lengths keep input order, so batches are reproducible
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        if max_tokens is None:
            rows = max_batch_size
        else:
            longest = int(lengths[order[start]])  # sorted descending: the first row is the longest
            rows = max(1, min(max_batch_size, max_tokens // max(longest, 1)))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def restore_order(batches: Sequence[np.ndarray], results: R) -> R:
    """Put results computed batch by batch back in input order.

    Args:
        batches: the index arrays the results were computed for (from :func:`token_budget_batches`,
            possibly offset), together a permutation of ``0 .. n-1``.
        results: the per-batch results stacked in batch order, one row per index: a list,
            or anything indexable by an integer array (numpy array, torch tensor, scipy CSR matrix).

    Returns:
        ``results`` reordered so that row ``i`` belongs to input ``i``; the same kind of object.
    """
    if not len(batches):
        return results
    order = np.concatenate(batches)
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.arange(len(order))
    if isinstance(results, list):
        return [results[i] for i in inverse]
    return results[inverse]


def pad_batch(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    left: bool = False,
    width: int | None = None,
    dtype: type = np.int64,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad token id lists into ``(ids, attention_mask)`` arrays of shape (rows, width).

    Args:
        sequences: token ids per row; empty rows are all padding.
        pad_id: the id that fills the gaps.
        left: pad on the left (decoder-only models generate from the last column).
        width: the number of columns, at least the longest row (ColBERT pads queries to a
            fixed length); default the longest row.
        dtype: of both arrays.

    Raises:
        InvalidInput: ``width`` shorter than the longest row.
    """
    longest = max((len(s) for s in sequences), default=0)
    if width is None:
        width = longest
    elif width < longest:
        raise InvalidInput(f"width {width} is shorter than the longest row ({longest} tokens)")
    ids = np.full((len(sequences), width), pad_id, dtype=dtype)
    mask = np.zeros((len(sequences), width), dtype=dtype)
    for row, seq in enumerate(sequences):
        if not len(seq):
            continue
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = seq
        mask[row, cols] = 1
    return ids, mask

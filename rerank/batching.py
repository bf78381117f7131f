"""Token-budget batching shared by the pointwise rerankers (cross-encoders, T5).

Pairs are tokenized once, sorted by length (longest first) and cut into batches whose
padded size (rows x longest row) stays under a token budget, so short pairs travel in
large batches and long ones in small batches: the cost of a batch is what the budget
bounds, not the count of pairs in it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cascade.retrieval.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPolicy:
    """How pairs are grouped into model calls.

    Args:
        batch_size: most pairs in one batch.
        token_budget: most padded tokens (rows x longest row) in one batch; ``None`` means
            ``batch_size * max_length``, the memory a count-based batch of full-length pairs takes.
        max_length: tokens per pair after truncation.
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
                f"token_budget ({self.token_budget}) must hold at least one pair of max_length {self.max_length}"
            )

    @property
    def budget(self) -> int:
        return self.token_budget if self.token_budget is not None else self.batch_size * self.max_length


def token_budget_batches(lengths: Sequence[int], policy: BatchPolicy) -> Iterator[np.ndarray]:
    """Indices of the pairs for each batch, longest pairs first.

    Args:
        lengths: token count of each pair (already truncated).
        policy: the batch size cap and token budget.

    Returns:
        An iterator of index arrays; together they cover every pair exactly once.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    # stable sort: equal lengths keep input order, so batches are deterministic
    order = np.argsort(-lengths, kind="stable")
    budget, cap = policy.budget, policy.batch_size
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(cap, budget // longest, len(order) - start))
        yield order[start : start + size]
        start += size


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pad token id lists into a matrix; returns (ids, attention mask), both int64.

    Args:
        seqs: token ids per row.
        pad_id: the id that fills the gaps.
        left: pad on the left (decoder-only models generate from the last column).
    """
    width = max((len(s) for s in seqs), default=0)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        if not len(s):
            continue
        if left:
            ids[row, width - len(s) :] = s
            mask[row, width - len(s) :] = 1
        else:
            ids[row, : len(s)] = s
            mask[row, : len(s)] = 1
    return ids, mask


def progress(total: int, desc: str, unit: str, enabled: bool):
    """A tqdm bar (items/s) for long work; a no-op bar below ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)

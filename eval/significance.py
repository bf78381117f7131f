"""Paired significance tests between two systems' per-query scores."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import stats

from cascade.retrieval.errors import InvalidInput


def _paired(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    common = sorted(a.keys() & b.keys())
    if len(common) < 2:
        raise InvalidInput("a paired test needs at least two queries scored by both runs")
    return np.array([a[q] for q in common]), np.array([b[q] for q in common])


def paired_t_test(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Two-sided p-value of Student's paired t-test."""
    x, y = _paired(a, b)
    if np.allclose(x, y):
        return 1.0
    return float(stats.ttest_rel(x, y).pvalue)


def randomization_test(
    a: Mapping[str, float], b: Mapping[str, float], trials: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of the paired randomization (permutation) test on the mean difference.

    Each trial flips the sign of every per-query difference with probability 1/2; the
    p-value counts trials at least as extreme as observed (plus one, so it is never 0).
    """
    x, y = _paired(a, b)
    diff = x - y
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(trials, len(diff)))
    extreme = int((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (trials + 1)

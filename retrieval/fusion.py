"""Fusion of several rankings of the same query into one.

Each method is a small pure function over per-retriever rankings; ties are broken by doc
id through :meth:`Ranking.from_scores`, so fused output is deterministic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from .errors import InvalidInput
from .types import Ranking


def rrf(rankings: Sequence[Ranking], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: sum of weight / (k + rank), ranks counted from 1."""
    fused: dict[str, float] = defaultdict(float)
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, doc_id in enumerate(ranking.doc_ids, start=1):
            fused[doc_id] += w / (k + rank)
    return fused


def _normalized_sum(normalize: Callable[[np.ndarray], np.ndarray]):
    def fuse(rankings: Sequence[Ranking], weights: Sequence[float], k: int = 60) -> dict[str, float]:
        # A document missing from one retriever's list gets that list's floor (0 after
        # min-max, the lowest z-score), i.e. no better than the worst document it retrieved.
        union = {d for r in rankings for d in r.doc_ids}
        fused = dict.fromkeys(union, 0.0)
        for ranking, w in zip(rankings, weights, strict=True):
            if not len(ranking):
                continue
            norm = normalize(np.asarray(ranking.scores, dtype=np.float64))
            scores = dict(zip(ranking.doc_ids, norm.tolist(), strict=True))
            floor = float(norm.min())
            for d in union:
                fused[d] += w * scores.get(d, floor)
        return fused

    return fuse


def _minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.ones_like(x)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def dbsf(rankings: Sequence[Ranking], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Distribution-based score fusion as Qdrant defines it (``"fusion": "dbsf"``): each list's
    scores are mapped linearly so that mean - 3 sd -> 0 and mean + 3 sd -> 1 (the sample
    standard deviation; a one-hit list, or one whose scores are all equal, gives 0.5), not
    clipped, then summed with the weights.

    Per list that is (z + 3) / 6, an affine map of the z-score, so DBSF ranks like ``zscore``
    except that (1) a document missing from a list adds 0, which is where z = -3 lands, while
    ``zscore`` charges it the lowest z-score in that list (typically between -1 and -2),
    so absence costs more here; (2) the standard deviation is the sample one (n - 1),
    not the population one."""
    fused: dict[str, float] = defaultdict(float)
    for ranking, w in zip(rankings, weights, strict=True):
        x = np.asarray(ranking.scores, dtype=np.float64)
        if len(x) == 0:
            continue
        sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
        norm = (x - (x.mean() - 3 * sd)) / (6 * sd) if sd > 0 else np.full_like(x, 0.5)
        for doc_id, s in zip(ranking.doc_ids, norm.tolist(), strict=True):
            fused[doc_id] += w * s
    return fused


FUSIONS = {
    "rrf": rrf,
    "minmax": _normalized_sum(_minmax),
    "zscore": _normalized_sum(_zscore),
    "dbsf": dbsf,
}


def fuse(
    rankings: Sequence[Ranking],
    method: str = "rrf",
    weights: Sequence[float] | None = None,
    k: int = 60,
    top_k: int | None = None,
) -> Ranking:
    """Fuse rankings of one query. ``k`` is RRF's constant; ``top_k`` cuts the result."""
    if method not in FUSIONS:
        raise InvalidInput(f"unknown fusion {method!r}; valid: {', '.join(FUSIONS)}")
    if not rankings:
        raise InvalidInput("nothing to fuse")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    fused = FUSIONS[method](rankings, weights, k)
    return Ranking.from_scores(rankings[0].query_id, list(fused), list(fused.values()), top_k)

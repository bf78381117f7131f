"""Token-vector corpora for the PLAID tests: noisy copies of a few topic vectors, like real token clusters."""

import numpy as np

from cascade.retrieval.encoders.colbert import MultiVectors

DIM = 32


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def corpus(n_docs=200, n_topics=30, seed=0, lo=3, hi=30):
    """Documents whose tokens are noisy copies of a few topic vectors (like real token clusters)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_topics, DIM))
    topics = topics / np.linalg.norm(topics, axis=1, keepdims=True)
    rows = [topics[rng.integers(0, n_topics, rng.integers(lo, hi))] + 0.1 * rng.standard_normal((1, DIM))
            for _ in range(n_docs)]  # fmt: skip
    rows = [unit(r + 0.1 * rng.standard_normal(r.shape)) for r in rows]
    queries = [unit(topics[rng.integers(0, n_topics, 6)] + 0.15 * rng.standard_normal((6, DIM))) for _ in range(12)]
    return MultiVectors.from_list(rows), MultiVectors.from_list(queries), np.array([f"d{i}" for i in range(n_docs)])

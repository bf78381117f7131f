"""Small structured statistics for the synthetic-vector generators (cascade.eval.synthetic_fit),
so tests sample corpora without fitting on real model outputs."""

import numpy as np
import scipy.sparse as sp

from cascade.eval import synthetic_fit as fits

TOPICS, VOCAB, TOPIC_TERMS = 8, 600, 60


def topic_rows(n: int, lo: int, hi: int, rng) -> sp.csr_matrix:
    """Each row: terms of one of TOPICS disjoint term sets (90%) and a few global ones."""
    rows, cols, vals = [], [], []
    for i in range(n):
        t = rng.integers(TOPICS)
        m = int(rng.integers(lo, hi))
        own = rng.choice(np.arange(t * TOPIC_TERMS, (t + 1) * TOPIC_TERMS), int(m * 0.9), replace=False)
        other = rng.choice(np.arange(TOPICS * TOPIC_TERMS, VOCAB), m - len(own), replace=False)
        terms = np.r_[own, other]
        rows += [i] * len(terms)
        cols += terms.tolist()
        vals += rng.integers(1, 250, len(terms)).tolist()
    return sp.csr_matrix((np.array(vals, np.uint16), (rows, cols)), shape=(n, VOCAB))


def clustered(n: int, dim: int, k: int, rng, spread: float = 0.25) -> np.ndarray:
    cents = rng.standard_normal((k, dim))
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    x = cents[rng.integers(k, size=n)] + rng.standard_normal((n, dim)) * spread / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def splade_fit(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return fits.splade_stats(topic_rows(400, 20, 50, rng), topic_rows(60, 5, 12, rng), 100.0, topics=TOPICS)


def minilm_fit(dim: int = 48, seed: int = 0) -> dict:
    return fits.minilm_stats(clustered(600, dim, 6, np.random.default_rng(seed)), query_cosine=0.7, k=6)


def token_fit(dim: int = 32, seed: int = 0, k: int = 64) -> dict:
    """Passages whose tokens come from 3 of ``k`` tight clusters each (topical documents)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 40, 300)
    cents = clustered(k, dim, k, rng, spread=10.0)
    labels = np.concatenate([rng.choice(rng.choice(k, 3, replace=False), n) for n in lengths])
    x = cents[labels] + rng.standard_normal((len(labels), dim)) * 0.15 / np.sqrt(dim)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return fits.token_stats(x, lengths, rng.integers(5, 10, 50), 0.8, k=k)


def install(name: str, fit: dict) -> None:
    """Put ``fit`` where ``fit_<name>()`` finds it in this test's cache (child processes too)."""
    path = fits.fit_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **fit)

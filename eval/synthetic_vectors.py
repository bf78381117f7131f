"""SPLADE-, MiniLM- and ColBERT-shaped synthetic vectors at MS MARCO sizes, from a seed.

Real SciFact vectors are fitted once (:mod:`.synthetic_fit`); corpora of any size are then
sampled from the fits in chunks of :data:`CHUNK` documents, chunk ``c`` from its own random
stream ``(seed, kind, c)``, and written to raw memory-mapped arrays in ``workdir``. So memory
stays bounded by a chunk, a corpus of N documents is the first N of any larger one (a rerun
at a larger size only generates the missing chunks) and files already there are reused.

- :func:`splade_vectors`: each document takes the NMF topic mixture of a random real
  document, perturbed by Gamma(2, 1/2) noise per topic; its terms are sampled without
  replacement from that mixture of topic-term distributions (plus 10% term popularity as
  background), as many as the real document had; the i-th heaviest sampled term gets that
  real document's i-th largest weight (x U(0.9, 1.1)). Topically related terms co-occur, the
  document frequencies over the vocabulary are as skewed as the real ones, and terms per
  document and weight per rank follow the real distribution. Queries alike from the real
  queries' topic mixtures, lengths and weight profiles. Integer impacts (weights x100).
- :func:`minilm_vectors`: 384-dim unit vectors; a document picks a k-means cluster by its real
  size, then centroid + Gaussian residual (the cluster's top principal directions and scales,
  isotropic rest), renormalized. A query is a random generated document plus isotropic noise
  sized so its cosine to that document is the real mean cosine of a SciFact query and its
  relevant document.
- :func:`token_vectors`: 128-dim token vectors; a document copies the token count and the
  token cluster sequence of a random real MS MARCO-length passage, each token resampled in
  its cluster, 30% of the tokens moved to a random cluster (by size). Queries: real query
  token counts, tokens drawn from a random generated document plus noise sized to the real
  mean best cosine of a query token against its relevant document.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cascade.retrieval.compiled import jit
from cascade.retrieval.encoders.colbert import MultiVectors
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.progress import progress

from . import synthetic_fit as fits

log = logging.getLogger(__name__)

#: documents per generated chunk (part of the data's definition: changing it changes the data)
CHUNK = 4096
_KINDS = {"splade": 1, "splade-q": 2, "minilm": 3, "minilm-q": 4, "tokens": 5, "tokens-q": 6}
BACKGROUND = 0.1
RESAMPLE = 0.3


@dataclass(frozen=True)
class SparseVectors:
    """Integer impacts: documents and queries as CSR matrices over ``vocab_size`` columns."""

    docs: sp.csr_matrix
    queries: sp.csr_matrix
    vocab_size: int
    scale: float


def _rng(seed: int, kind: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng([seed, _KINDS[kind], chunk])


def _fit_key(fit: dict) -> str:
    """A digest of the statistics: files generated from other statistics are not reused."""
    h = hashlib.sha256(str(fits.FIT_VERSION).encode())
    for name in sorted(fit):
        h.update(name.encode() + np.ascontiguousarray(fit[name]).tobytes())
    return h.hexdigest()[:16]


def doc_ids(n: int) -> np.ndarray:
    """Ids ``d0000000``, ...: zero-padded so that string order is index order (ties by id)."""
    return np.char.add("d", np.char.zfill(np.arange(n).astype(str), 8))


class _Store:
    """Raw arrays appended chunk by chunk in ``folder``, with a JSON of what is there."""

    def __init__(self, folder: Path, key: dict):
        self.folder, self.key = folder, key
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "meta.json"
        self.meta = json.loads(meta.read_text()) if meta.is_file() else {}
        if self.meta.get("key") != key:  # another fit or format: start over
            for f in folder.glob("*.bin"):
                f.unlink()
            self.meta = {"key": key, "chunks": 0, "rows": {}}

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        for name, a in arrays.items():
            with open(self.folder / f"{name}.bin", "ab") as f:
                f.write(np.ascontiguousarray(a).tobytes())
            self.meta["rows"][name] = [
                self.meta["rows"].get(name, [0])[0] + len(a),
                a.dtype.str,
                list(a.shape[1:]),
            ]
        self.meta["chunks"] += 1
        (self.folder / "meta.json").write_text(json.dumps(self.meta))

    def open(self, name: str) -> np.ndarray:
        rows, dtype, tail = self.meta["rows"][name]
        if rows == 0:
            return np.zeros((0, *tail), dtype)
        return np.memmap(self.folder / f"{name}.bin", dtype=np.dtype(dtype), mode="r", shape=(rows, *tail))


def _chunks(store: _Store, n: int, make, desc: str) -> None:
    need = -(-n // CHUNK)
    if store.meta["chunks"] >= need:
        return
    for c in progress(range(store.meta["chunks"], need), desc, unit="chunk"):
        store.append(make(c))


# -- SPLADE-shaped ---------------------------------------------------------------------------


@jit
def _bisect(cdf, u):
    lo, hi = 0, len(cdf) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cdf[mid] > u:
            hi = mid
        else:
            lo = mid + 1
    return lo


@jit
def _alias(p):  # pragma: no cover - compiled
    """Walker's alias tables of each row of ``p`` (Vose's construction): a draw from row r is
    one uniform x in [0, n): column k = int(x) if frac(x) < prob[r, k] else alias[r, k]."""
    rows, n = p.shape
    prob, alias = np.zeros((rows, n)), np.zeros((rows, n), np.int64)
    small, large = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for r in range(rows):
        q = p[r] * n / p[r].sum()
        ns, nl = 0, 0
        for k in range(n):
            if q[k] < 1.0:
                small[ns] = k
                ns += 1
            else:
                large[nl] = k
                nl += 1
        while ns > 0 and nl > 0:
            ns -= 1
            lo = small[ns]
            hi = large[nl - 1]
            prob[r, lo], alias[r, lo] = q[lo], hi
            q[hi] = q[hi] + q[lo] - 1.0
            if q[hi] < 1.0:
                nl -= 1
                small[ns] = hi
                ns += 1
        for j in range(nl):
            prob[r, large[j]] = 1.0
        for j in range(ns):
            prob[r, small[j]] = 1.0
    return prob, alias


@jit
def _successive(theta_cdf, prob, alias, lengths, u, out_ptr, out_terms, stamp):  # pragma: no cover - compiled
    """Per document: draw (component by its mixture, then term by the component) until it has
    ``lengths[i]`` distinct terms or its 3L+16 draws are spent; terms in first-draw order."""
    pos, d, n = 0, 0, prob.shape[1]
    for i in range(len(lengths)):
        got, budget = 0, 3 * lengths[i] + 16
        for _ in range(budget):
            if got == lengths[i]:
                break
            c = _bisect(theta_cdf[i], u[d])
            x = u[d + 1] * n
            k = min(int(x), n - 1)
            t = k if x - k < prob[c, k] else alias[c, k]
            d += 2
            if stamp[t] != i + 1:
                stamp[t] = i + 1
                out_terms[pos] = t
                pos += 1
                got += 1
        out_ptr[i + 1] = pos
    return d


def _cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights, axis=1, dtype=np.float64)
    return c / c[:, -1:]


def _sparse_rows(fit: dict, rng: np.random.Generator, n: int, mix: np.ndarray, prof: np.ndarray,
                 ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``n`` sparse rows as (lengths, column ids, impacts), rows in order, columns ascending.

    Terms are drawn with replacement (a component by the document's topic mixture, then a term
    by the component's distribution) and kept in order of first appearance: successive
    sampling, which is weighted sampling without replacement, heaviest terms first on average.
    """
    topics = fit["topics"] / np.maximum(fit["topics"].sum(axis=1, keepdims=True), 1e-12)
    comps = np.vstack([topics, fit["df"] / fit["df"].sum()])  # the topics and the background
    parent = rng.integers(0, len(mix), n)
    theta = mix[parent] * rng.gamma(2.0, 0.5, (n, len(topics))).astype(np.float32) + 1e-6
    theta = np.hstack(
        [(1 - BACKGROUND) * theta / theta.sum(axis=1, keepdims=True), np.full((n, 1), BACKGROUND)]
    )
    lengths = np.minimum(ptr[parent + 1] - ptr[parent], comps.shape[1]).astype(np.int64)
    u = rng.random(int(2 * (3 * lengths + 16).sum()))
    out_ptr, terms = np.zeros(n + 1, np.int64), np.zeros(int(lengths.sum()), np.int64)
    _successive(_cdf(theta), *_alias(comps), lengths, u, out_ptr, terms, np.zeros(comps.shape[1], np.int64))
    counts = np.diff(out_ptr)
    rows = np.repeat(np.arange(n), counts)
    rank = np.arange(out_ptr[-1]) - out_ptr[rows]
    w = prof[np.minimum(ptr[parent][rows] + rank, len(prof) - 1)].astype(np.float32)
    vals = np.maximum(1, np.rint(w * rng.uniform(0.9, 1.1, len(w)))).astype(np.uint16)
    cols = fit["active"][terms[: out_ptr[-1]]].astype(np.int32)
    order = np.lexsort((cols, rows))
    return counts, cols[order], vals[order]


def _sparse_set(store: _Store, n: int, fit, kind: str, mix, prof, ptr, desc: str) -> sp.csr_matrix:
    def make(c):
        rng = _rng(store.key["seed"], kind, c)
        # sub-batches bound the draw arrays to some 50 MB each
        parts = [_sparse_rows(fit, rng, 1024, mix, prof, ptr) for _ in range(CHUNK // 1024)]
        return {
            name: np.concatenate([p[i] for p in parts])
            for i, name in enumerate(("lengths", "indices", "data"))
        }

    _chunks(store, n, make, desc)
    lengths = np.asarray(store.open("lengths")[:n])
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return sp.csr_matrix((store.open("data")[: indptr[-1]], store.open("indices")[: indptr[-1]], indptr),
                         shape=(n, int(fit["vocab_size"])))  # fmt: skip


def splade_vectors(n_docs: int, n_queries: int, workdir: str | Path, seed: int = 0,
                   source: str | Path | None = None, fit: dict | None = None) -> SparseVectors:  # fmt: skip
    """``n_docs`` SPLADE-shaped documents and ``n_queries`` queries (module doc).

    Args:
        n_docs, n_queries: how many of each (>= 1).
        workdir: where the arrays are written (``splade-s<seed>/``) and reused from.
        seed: the data's seed.
        source: the dataset the statistics are fitted on (default: SciFact).
        fit: statistics to sample from instead (:func:`.synthetic_fit.splade_stats`).

    Example:
        >>> v = splade_vectors(100_000, 500, "/tmp/scale")  # doctest: +SKIP
        >>> v.docs.shape, v.queries.shape                   # doctest: +SKIP
        ((100000, 30522), (500, 30522))
    """
    _check(n_docs, n_queries)
    fit = fit if fit is not None else fits.fit_splade(source)
    key = {"kind": "splade", "seed": seed, "chunk": CHUNK, "fit": _fit_key(fit)}
    folder = Path(workdir) / f"splade-s{seed}"
    docs = _sparse_set(_Store(folder / "docs", key), n_docs, fit, "splade", fit["doc_mix"], fit["doc_profiles"],
                       fit["doc_ptr"], "SPLADE-shaped docs")  # fmt: skip
    queries = _sparse_set(_Store(folder / "queries", key), n_queries, fit, "splade-q", fit["query_mix"],
                          fit["query_profiles"], fit["query_ptr"], "SPLADE-shaped queries")  # fmt: skip
    return SparseVectors(docs, queries, int(fit["vocab_size"]), float(fit["scale"]))


# -- MiniLM-shaped ---------------------------------------------------------------------------


def _cluster_points(
    fit: dict, rng: np.random.Generator, labels: np.ndarray, block: int = 16384
) -> np.ndarray:
    """One unit vector per label: centroid + low-rank and isotropic Gaussian residual."""
    if len(labels) > block:  # bounded memory: the per-point bases are (block, rank, dim)
        return np.concatenate(
            [_cluster_points(fit, rng, labels[s : s + block]) for s in range(0, len(labels), block)]
        )
    d = fit["centroids"].shape[1]
    z = rng.standard_normal((len(labels), fit["scales"].shape[1]), dtype=np.float32) * fit["scales"][labels]
    x = fit["centroids"][labels] + np.einsum("nr,nrd->nd", z, fit["basis"][labels])
    x += rng.standard_normal((len(labels), d), dtype=np.float32) * fit["sigma"][labels, None]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _noisy(x: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Unit rows near ``x``: isotropic noise of norm s, cos = 1 / sqrt(1 + s^2) on average."""
    s = np.sqrt(max(1.0 / cosine**2 - 1.0, 0.0))
    y = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(s / np.sqrt(x.shape[1]))
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def minilm_vectors(n_docs: int, n_queries: int, workdir: str | Path, seed: int = 0,
                   source: str | Path | None = None, fit: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """MiniLM-shaped float32 unit vectors (module doc).

    Returns:
        (documents (n_docs, 384) memory-mapped, queries (n_queries, 384), each query's source
        document index).
    """
    _check(n_docs, n_queries)
    fit = fit if fit is not None else fits.fit_minilm(source)
    prob = fit["sizes"] / fit["sizes"].sum()
    key = {"kind": "minilm", "seed": seed, "chunk": CHUNK, "fit": _fit_key(fit)}
    store = _Store(Path(workdir) / f"minilm-s{seed}", key)

    def make(c):
        rng = _rng(seed, "minilm", c)
        return {"vectors": _cluster_points(fit, rng, rng.choice(len(prob), CHUNK, p=prob))}

    _chunks(store, n_docs, make, "MiniLM-shaped docs")
    docs = store.open("vectors")[:n_docs]
    rng = _rng(seed, "minilm-q", n_docs)  # queries depend on the corpus they come from
    src = np.sort(rng.choice(n_docs, n_queries, replace=n_queries > n_docs))
    return docs, _noisy(np.asarray(docs[src]), float(fit["query_cosine"]), rng), src


# -- token vectors (ColBERT-shaped) ----------------------------------------------------------


def token_vectors(n_docs: int, n_queries: int, workdir: str | Path, seed: int = 0,
                  source: str | Path | None = None, fit: dict | None = None) -> tuple[MultiVectors, MultiVectors, np.ndarray]:  # fmt: skip
    """ColBERT-shaped token vectors, float16, 128 dims (module doc).

    Returns:
        (documents (memory-mapped), queries, each query's source document index).
    """
    _check(n_docs, n_queries)
    fit = fit if fit is not None else fits.fit_tokens(source)
    lengths, labels = fit["passage_lengths"], fit["labels"]
    starts = np.r_[0, np.cumsum(lengths)]
    prob = fit["sizes"] / fit["sizes"].sum()
    key = {"kind": "tokens", "seed": seed, "chunk": CHUNK, "fit": _fit_key(fit)}
    store = _Store(Path(workdir) / f"tokens-s{seed}", key)

    def make(c):
        rng = _rng(seed, "tokens", c)
        parent = rng.integers(0, len(lengths), CHUNK)
        lens = lengths[parent]
        tok = np.repeat(starts[parent], lens) + (
            np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        )
        lab = labels[tok]
        move = rng.random(len(lab)) < RESAMPLE
        lab[move] = rng.choice(len(prob), int(move.sum()), p=prob)
        return {
            "lengths": lens.astype(np.int64),
            "vectors": _cluster_points(fit, rng, lab).astype(np.float16),
        }

    _chunks(store, n_docs, make, "token-vector docs")
    lens = np.asarray(store.open("lengths")[:n_docs])
    offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    docs = MultiVectors(store.open("vectors")[: offsets[-1]], offsets)
    rng = _rng(seed, "tokens-q", n_docs)
    src = np.sort(rng.choice(n_docs, n_queries, replace=n_queries > n_docs))
    qlens = rng.choice(fit["query_lengths"], n_queries)
    rows = []
    for s, q in zip(src, qlens, strict=True):
        d = np.asarray(docs[s], np.float32)
        pick = d[rng.choice(len(d), int(q), replace=int(q) > len(d))]
        rows.append(_noisy(pick, float(fit["query_token_cosine"]), rng).astype(np.float16))
    return docs, MultiVectors.from_list(rows), src


def _check(n_docs: int, n_queries: int) -> None:
    if n_docs < 1 or n_queries < 1:
        raise InvalidInput(f"need at least one document and one query, got {n_docs} and {n_queries}")

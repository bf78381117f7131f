"""Statistics of real SPLADE-tiny and MiniLM vectors that :mod:`.synthetic_vectors` samples from.

Each fit runs once on SciFact (or another BEIR-layout ``source``) and is cached as one
``.npz`` under Cascade's cache dir, keyed by the source's fingerprint and :data:`FIT_VERSION`;
every fit is deterministic (seeded k-means, NMF with its deterministic ``nndsvda`` start).

- :func:`fit_splade`: the SPLADE-tiny vectors of the corpus and test queries (the
  ``cascade bench sparse`` cache, encoded once when missing): a 64-topic NMF of the document
  impacts (topic x term distributions, each document's and query's topic mixture), every
  real document's and query's sorted weight profile (its length and its weight at each rank),
  and term popularity (document frequency).
- :func:`fit_minilm`: all-MiniLM-L6-v2 document embeddings (the ``dense`` preset's cached
  index): spherical k-means, per cluster its centroid, size, top principal directions of the
  residuals with their scales, and the isotropic rest; plus the mean cosine of a real test
  query with its relevant document (the queries encoded here, a few seconds).
- :func:`fit_tokens`: MiniLM token vectors (the late-interaction format of ``cascade bench
  plaid``, projected to 128 dims by its fixed random orthonormal map) of SciFact text cut into
  MS MARCO-length passages (words per passage log-normal, median 52, the long tail of MS
  MARCO's 56-word mean): the same cluster model, each passage's token count and cluster
  sequence, the token counts of the real test queries and the mean best cosine of a query
  token against its relevant document's tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from cascade.eval.datasets import Dataset, cache_dir, load_dataset
from cascade.retrieval.errors import InvalidInput

log = logging.getLogger(__name__)

FIT_VERSION = 1
#: SciFact, where the shared checkout has it
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"
TOPICS = 64
DENSE_CLUSTERS = 64
TOKEN_CLUSTERS = 1024
#: principal residual directions kept per cluster (the rest of the residual is isotropic)
RANK = 8
#: documents of the source cut into MS MARCO-length passages for the token fit
TOKEN_DOCS = 400
PROJECTION_DIM = 128


def _source(source: str | Path | None) -> Dataset:
    path = Path(source) if source is not None else SCIFACT
    if source is None and not path.is_dir():
        raise InvalidInput(
            f"no source dataset for the synthetic-vector fits: {path} is missing (pass source=DIR)"
        )
    return load_dataset(path, "test")


def fit_path(name: str, source: str | Path | None = None, cache: Path | None = None) -> Path:
    """Where the ``name`` fit (``splade``, ``minilm``, ``tokens``) of ``source`` is cached."""
    ds = _source(source)
    key = hashlib.sha256(json.dumps([name, FIT_VERSION, ds.name, ds.fingerprint]).encode()).hexdigest()[:12]
    return (cache or cache_dir() / "synthetic_fit") / f"{name}-{ds.name}-{key}.npz"


def _cached(name: str, ds: Dataset, fit, cache: Path | None) -> dict[str, np.ndarray]:
    path = fit_path(name, ds.root, cache)
    if not path.is_file():
        log.info("fitting %s statistics on %s (once, then cached in %s)", name, ds.name, path)
        arrays = fit(ds)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.rename(path)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _profiles(m) -> tuple[np.ndarray, np.ndarray]:
    """Each row's weights sorted descending, concatenated, and the row offsets."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((-m.data.astype(np.int64), rows))
    return m.data[order].astype(np.uint16), m.indptr.astype(np.int64)


def splade_stats(docs, queries, scale: float, topics: int = TOPICS) -> dict[str, np.ndarray]:
    """What :func:`fit_splade` keeps, from (docs x vocab) and (queries x vocab) integer impacts."""
    from sklearn.decomposition import NMF

    docs, queries = docs.tocsr(), queries.tocsr()
    df = np.bincount(docs.indices, minlength=docs.shape[1])
    active = np.flatnonzero(df > 0)  # terms no real document has are never generated
    nmf = NMF(topics, init="nndsvda", max_iter=100, random_state=0)
    doc_mix = nmf.fit_transform(docs[:, active].astype(np.float32))
    query_mix = nmf.transform(queries[:, active].astype(np.float32))
    d_prof, d_ptr = _profiles(docs)
    q_prof, q_ptr = _profiles(queries)
    return {"active": active, "df": df[active], "topics": nmf.components_.astype(np.float32),
            "doc_mix": doc_mix.astype(np.float32), "query_mix": query_mix.astype(np.float32),
            "doc_profiles": d_prof, "doc_ptr": d_ptr, "query_profiles": q_prof, "query_ptr": q_ptr,
            "vocab_size": np.int64(docs.shape[1]), "scale": np.float64(scale)}  # fmt: skip


def fit_splade(source: str | Path | None = None, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Topic model, weight profiles and term popularity of real SPLADE-tiny vectors (module doc)."""

    def fit(ds: Dataset) -> dict[str, np.ndarray]:
        import scipy.sparse as sp

        from .benchmarks.sparse_vectors import SPLADE_TINY, load_workload

        ids, qids = [d.id for d in ds.corpus()], [q.id for q in ds.queries]
        # any cached SPLADE-tiny encoding of exactly these documents and queries (an earlier
        # fingerprint of the same corpus included), else encode once (minutes on a CPU)
        for meta in sorted((cache_dir() / "sparse_vectors").glob(f"{ds.name}-{ds.split}-*/meta.json")):
            m = json.loads(meta.read_text())
            if (Path(m["config"]["model"]).name == SPLADE_TINY.name and m["scale"] == 100.0
                    and m["doc_ids"] == ids and m["query_ids"] == qids):  # fmt: skip
                return splade_stats(
                    sp.load_npz(meta.parent / "docs.npz"), sp.load_npz(meta.parent / "queries.npz"), 100.0
                )
        w = load_workload(ds, "splade")
        return splade_stats(w.docs, w.queries, w.scale)

    return _cached("splade", _source(source), fit, cache)


def clusters(x: np.ndarray, k: int, seed: int = 0, rank: int = RANK) -> dict[str, np.ndarray]:
    """Spherical k-means of unit rows ``x`` and a Gaussian residual model per cluster.

    Returns centroids (k, d), sizes (k,), basis (k, rank, d) with scales (k, rank) (residual
    principal directions and standard deviations along them) and sigma (k,) (per-dimension
    standard deviation of the rest).
    """
    from cascade.retrieval.late.kmeans import kmeans

    x = np.asarray(x, np.float32)
    cents = kmeans(x, k, iters=20, seed=seed, device="cpu").numpy()
    labels = np.argmax(x @ cents.T, axis=1)
    d = x.shape[1]
    basis, scales = np.zeros((k, rank, d), np.float32), np.zeros((k, rank), np.float32)
    sigma, sizes = np.zeros(k, np.float32), np.bincount(labels, minlength=k)
    for c in range(k):
        r = x[labels == c] - cents[c]
        if len(r) < 2:
            continue
        _, s, vt = np.linalg.svd(r, full_matrices=False)
        var = s**2 / len(r)
        m = min(rank, len(s))
        basis[c, :m], scales[c, :m] = vt[:m], np.sqrt(var[:m])
        sigma[c] = np.sqrt(max(var[m:].sum(), 0.0) / (d - m))
    return {"centroids": cents, "sizes": sizes, "basis": basis, "scales": scales, "sigma": sigma,
            "labels": labels}  # fmt: skip


def minilm_stats(
    embeddings: np.ndarray, query_cosine: float, k: int = DENSE_CLUSTERS
) -> dict[str, np.ndarray]:
    """What :func:`fit_minilm` keeps, from unit document embeddings and the query cosine."""
    out = clusters(embeddings, k)
    out.pop("labels")
    return {**out, "query_cosine": np.float64(query_cosine)}


def token_stats(x: np.ndarray, passage_lengths: np.ndarray, query_lengths: np.ndarray, query_token_cosine: float,
                k: int = TOKEN_CLUSTERS) -> dict[str, np.ndarray]:  # fmt: skip
    """What :func:`fit_tokens` keeps, from unit token vectors (passages concatenated)."""
    return {
        **clusters(x, k),
        "passage_lengths": np.asarray(passage_lengths, np.int64),
        "query_lengths": np.asarray(query_lengths, np.int64),
        "query_token_cosine": np.float64(query_token_cosine),
    }


def _minilm_corpus(ds: Dataset) -> tuple[list[str], np.ndarray]:
    """The corpus' MiniLM embeddings: any cached flat MiniLM index of exactly these documents
    (an earlier fingerprint of the same corpus included), else the ``dense`` preset's index,
    built once (minutes on a CPU)."""
    from cascade.retrieval.models import DEFAULT_DENSE_MODEL

    ids = [d.id for d in ds.corpus()]
    for manifest in sorted((cache_dir() / "indexes").glob(f"{ds.name}-*/dense-*/manifest.json")):
        m = json.loads(manifest.read_text())
        p = m.get("params", {})
        if (m.get("kind") == "dense" and p.get("index") == "Flat" and m.get("num_docs") == len(ids)
                and p.get("encoder", {}).get("model") == DEFAULT_DENSE_MODEL and not p.get("chunking")):  # fmt: skip
            cached = np.load(manifest.parent / "doc_ids.npy").tolist()
            if cached == ids:
                return ids, np.load(manifest.parent / "embeddings.npy").astype(np.float32)
    from cascade.eval.evaluate import dataset_index_set
    from cascade.retrieval.pipeline import RetrieverStage

    flat = dataset_index_set(ds).retriever(RetrieverStage(retriever="dense"))
    return np.asarray(flat.doc_ids).tolist(), np.asarray(flat.embeddings, np.float32)


def fit_minilm(source: str | Path | None = None, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Clusters of real MiniLM document embeddings and the real query-to-relevant cosine."""
    ds = _source(source)

    def fit(ds: Dataset) -> dict[str, np.ndarray]:
        from cascade.retrieval.encoders.dense import DenseEncoder
        from cascade.retrieval.models import DEFAULT_DENSE_MODEL

        ids, emb = _minilm_corpus(ds)
        qv = DenseEncoder(DEFAULT_DENSE_MODEL, device="cpu", show_progress=False).encode_queries(
            [q.text for q in ds.queries]
        )
        pos = {d: i for i, d in enumerate(ids)}
        cos = [max(float(qv[i] @ emb[pos[d]]) for d in ds.qrels[q.id] if d in pos)
               for i, q in enumerate(ds.queries) if any(d in pos for d in ds.qrels.get(q.id, {}))]  # fmt: skip
        return minilm_stats(emb, float(np.mean(cos)))

    return _cached("minilm", ds, fit, cache)


def _passages(ds: Dataset, n_docs: int, seed: int = 0) -> list[str]:
    """The first ``n_docs`` documents cut into consecutive MS MARCO-length passages."""
    rng = np.random.default_rng(seed)
    out = []
    for i, d in enumerate(ds.corpus()):
        if i >= n_docs:
            break
        words = d.contents.split()
        while words:
            n = int(np.clip(rng.lognormal(np.log(52), 0.4), 10, 200))
            out.append(" ".join(words[:n]))
            words = words[n:]
    return out


def fit_tokens(source: str | Path | None = None, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Clusters of real MiniLM token vectors (128 dims), passage and query token counts."""
    ds = _source(source)

    def fit(ds: Dataset) -> dict[str, np.ndarray]:
        from cascade.retrieval.encoders.colbert import ColBERTEncoder
        from cascade.retrieval.late.maxsim import MaxSim
        from cascade.retrieval.models import DEFAULT_DENSE_MODEL

        enc = ColBERTEncoder(DEFAULT_DENSE_MODEL, format="tokens", device="cpu", projection_dim=PROJECTION_DIM,
                             show_progress=True)  # fmt: skip
        passages = enc.encode_documents(_passages(ds, TOKEN_DOCS))
        queries = enc.encode_queries([q.text for q in ds.queries])
        # a real query's tokens against its relevant document's tokens: mean best cosine per token
        docs = {d.id: d.contents for d in ds.corpus()}
        pairs = [(i, next(iter(ds.qrels[q.id]))) for i, q in enumerate(ds.queries) if ds.qrels.get(q.id)]
        pairs = [(i, d) for i, d in pairs if d in docs][:100]
        rel = enc.encode_documents([docs[d] for _, d in pairs])
        per_token = [float(MaxSim(type(rel)(rel[j], np.array([0, len(rel[j])]))).scores(
            type(rel)(queries[i], np.array([0, len(queries[i])])))[0, 0]) / len(queries[i])
            for j, (i, _) in enumerate(pairs)]  # fmt: skip
        return token_stats(
            np.asarray(passages.vectors, np.float32),
            passages.lengths,
            queries.lengths,
            float(np.mean(per_token)),
        )

    return _cached("tokens", ds, fit, cache)

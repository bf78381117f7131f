"""The docstore: document id -> title, text and metadata, in embedded SQLite (WAL).

Writes go in one transaction per batch, so a process killed mid-batch leaves the store
exactly as it was before that batch. Reads are safe from several threads (one connection
per thread).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.types import Document

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
) WITHOUT ROWID;
"""
_MAX_VARS = 900  # below SQLite's default limit on bound parameters


class DocStore:
    """Example:
    >>> store = DocStore("/tmp/docs.sqlite")               # doctest: +SKIP
    >>> store.put_many([Document("d1", "text")])            # doctest: +SKIP
    >>> store.get_many(["d1"])                              # doctest: +SKIP
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def put_many(self, docs: Iterable[Document], replace: bool = True) -> int:
        """Insert (or replace) documents in one transaction; returns how many were written.

        With ``replace=False`` an id already stored is an error and nothing is written.
        """
        rows = [(d.id, d.title, d.text, json.dumps(dict(d.metadata))) for d in docs]
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f"{verb} INTO docs VALUES (?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            conn.execute("ROLLBACK")
            raise InvalidInput(f"duplicate document id: {e}") from None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def delete_many(self, ids: Sequence[str]) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = 0
            for i in range(0, len(ids), _MAX_VARS):
                chunk = list(ids[i : i + _MAX_VARS])
                n += conn.execute(
                    f"DELETE FROM docs WHERE id IN ({','.join('?' * len(chunk))})", chunk
                ).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return n

    def get_many(self, ids: Sequence[str], missing_ok: bool = False) -> list[Document]:
        """Documents in the order of ``ids``; a missing id raises unless ``missing_ok``
        (then it is skipped)."""
        found: dict[str, Document] = {}
        conn = self._conn()
        for i in range(0, len(ids), _MAX_VARS):
            chunk = list(ids[i : i + _MAX_VARS])
            for id_, title, text, meta in conn.execute(
                f"SELECT id, title, text, metadata FROM docs WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ):
                found[id_] = Document(id_, text, title, json.loads(meta))
        if not missing_ok and len(found) < len(set(ids)):
            missing = [i for i in ids if i not in found]
            raise NotFound(f"{len(missing)} document(s) not in the docstore, e.g. {missing[0]!r}")
        return [found[i] for i in ids if i in found]

    def get(self, doc_id: str) -> Document:
        return self.get_many([doc_id])[0]

    def __contains__(self, doc_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM docs WHERE id = ?", (doc_id,)).fetchone() is not None

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def __iter__(self) -> Iterator[Document]:
        cur = self._conn().execute("SELECT id, title, text, metadata FROM docs ORDER BY id")
        for id_, title, text, meta in cur:
            yield Document(id_, text, title, json.loads(meta))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

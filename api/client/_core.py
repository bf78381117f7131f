"""What the sync and async clients share: each route's request and how its answer is read,
error mapping, NDJSON batching for ingest, and the SSE reader for ``/v1/answer``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cascade.retrieval.errors import require
from cascade.retrieval.types import Document

from .types import (
    AnswerEvent,
    CascadeAPIError,
    Citation,
    CollectionInfo,
    CompactResult,
    Context,
    EmbeddingsResult,
    RerankResult,
    SearchResponse,
    StoredDocument,
)

httpx = require("httpx", "serve")

DEFAULT_URL = "http://127.0.0.1:8000"
NDJSON = {"content-type": "application/x-ndjson"}
#: Ingest batches: at most this many documents / bytes per request (the server's defaults
#: allow 20,000 documents and 32 MiB).
BATCH_DOCS = 1000
BATCH_BYTES = 8 * 1024 * 1024


def headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    out = {"user-agent": "cascade-client/0.1"}
    if api_key:
        out["authorization"] = f"Bearer {api_key}"
    out.update(extra or {})
    return out


@dataclass(frozen=True)
class Call:
    """One request and how to read its JSON answer."""

    method: str
    path: str
    json: Any = None
    parse: Callable[[Any], Any] = lambda d: d
    content: bytes | None = None
    headers: dict[str, str] | None = None
    files: list | None = None

    def kwargs(self) -> dict[str, Any]:
        out = {"json": self.json, "content": self.content, "headers": self.headers, "files": self.files}
        return {k: v for k, v in out.items() if v is not None}


def transport_error(e: Exception) -> CascadeAPIError:
    return CascadeAPIError(None, type(e).__name__, str(e) or type(e).__name__)


def check(resp) -> None:
    """Raise :class:`CascadeAPIError` for an error answer (the body must have been read)."""
    if resp.is_success:
        return
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        raise CascadeAPIError(
            resp.status_code, str(err.get("type", "HTTPError")), str(err.get("message", "")), body
        )
    raise CascadeAPIError(resp.status_code, "HTTPError", resp.text[:1000] or resp.reason_phrase, body)


def decode(resp) -> Any:
    check(resp)
    try:
        return resp.json()
    except ValueError as e:
        raise CascadeAPIError(
            resp.status_code, "InvalidResponse", f"not JSON: {e}", resp.text[:1000]
        ) from None


def _drop_none(**kw) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _seg(s: str) -> str:
    return quote(s, safe="")


# -- routes ------------------------------------------------------------------------------


def create_collection(name, pipeline, chunking, compaction) -> Call:
    body = _drop_none(name=name, pipeline=pipeline, chunking=chunking, compaction=compaction)
    return Call("POST", "/v1/collections", body, CollectionInfo.from_json)


def list_collections() -> Call:
    return Call("GET", "/v1/collections", parse=lambda d: list(d["collections"]))


def get_collection(name: str) -> Call:
    return Call("GET", f"/v1/collections/{_seg(name)}", parse=CollectionInfo.from_json)


def drop_collection(name: str) -> Call:
    return Call("DELETE", f"/v1/collections/{_seg(name)}", parse=lambda d: None)


def ingest_batch(collection: str, body: bytes) -> Call:
    return Call("POST", f"/v1/collections/{_seg(collection)}/documents", content=body, headers=NDJSON)


def upload_files(collection: str, files: Iterable[str | os.PathLike | tuple[str, bytes]]) -> Call:
    parts = []
    for f in files:
        if isinstance(f, tuple):
            name, data = f
        else:
            name, data = Path(f).name, Path(f).read_bytes()
        parts.append(("files", (name, data)))
    if not parts:
        raise ValueError("upload_files needs at least one file")
    return Call("POST", f"/v1/collections/{_seg(collection)}/files", files=parts)


def delete(collection: str, ids, filter) -> Call:
    if ids is None and filter is None:
        raise ValueError("delete needs ids, a filter or both")
    body = _drop_none(ids=list(ids) if ids is not None else None, filter=filter)
    return Call("POST", f"/v1/collections/{_seg(collection)}/delete", body, lambda d: int(d["deleted"]))


def get_document(collection: str, doc_id: str) -> Call:
    return Call(
        "GET", f"/v1/collections/{_seg(collection)}/documents/{_seg(doc_id)}", parse=StoredDocument.from_json
    )


def compact(collection: str) -> Call:
    return Call("POST", f"/v1/collections/{_seg(collection)}/compact",
                parse=lambda d: CompactResult(d["collection"], d["compacted"], d["segments"]))  # fmt: skip


def search(collection, query, k, pipeline, filter, fields) -> Call:
    q = query if isinstance(query, str) else list(query)
    body = _drop_none(collection=collection, query=q, k=k, pipeline=pipeline, filter=filter,
                      fields=list(fields) if fields is not None else None)  # fmt: skip
    return Call("POST", "/v1/search", body, SearchResponse.from_json)


def context_body(collection, query, **options) -> dict[str, Any]:
    return _drop_none(collection=collection, query=query, **options)


def context(collection, query, **options) -> Call:
    return Call("POST", "/v1/context", context_body(collection, query, **options), Context.from_json)


def rerank(query, documents, model, top_n) -> Call:
    texts = [_text(d) for d in documents]
    body = _drop_none(model=model, query=query, documents=texts, top_n=top_n)

    def parse(d):
        return [
            RerankResult(r["index"], float(r["relevance_score"]), texts[r["index"]]) for r in d["results"]
        ]

    return Call("POST", "/v1/rerank", body, parse)


def embeddings(input, model, dimensions) -> Call:
    body = _drop_none(
        input=input if isinstance(input, str) else list(input), model=model, dimensions=dimensions
    )
    return Call("POST", "/v1/embeddings", body, EmbeddingsResult.from_json)


def _text(d: str | Document | Mapping[str, Any]) -> str:
    if isinstance(d, str):
        return d
    if isinstance(d, Document):
        return d.text
    return d["text"]


# -- ingest batching ---------------------------------------------------------------------


def document_json(d: Document | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(d, Document):
        return {"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)}
    if isinstance(d, Mapping):
        return dict(d)
    raise TypeError(f"a document must be a dict or a cascade Document, got {type(d).__name__}")


class Batcher:
    """Turns documents into NDJSON request bodies of at most ``max_docs`` documents and about
    ``max_bytes`` bytes, so only one batch is ever held in memory."""

    def __init__(self, max_docs: int = BATCH_DOCS, max_bytes: int = BATCH_BYTES):
        if max_docs < 1:
            raise ValueError("batch_size must be at least 1")
        self.max_docs, self.max_bytes = max_docs, max_bytes
        self._lines: list[bytes] = []
        self._size = 0

    def add(self, doc) -> bytes | None:
        """Queue one document; return a full batch's body when this one does not fit."""
        line = json.dumps(document_json(doc), ensure_ascii=False).encode() + b"\n"
        out = None
        if self._lines and (len(self._lines) >= self.max_docs or self._size + len(line) > self.max_bytes):
            out = self.flush()
        self._lines.append(line)
        self._size += len(line)
        return out

    def flush(self) -> bytes | None:
        body = b"".join(self._lines) if self._lines else None
        self._lines, self._size = [], 0
        return body


# -- /v1/answer --------------------------------------------------------------------------


def answer_body(collection, query, **options) -> dict[str, Any]:
    return {**context_body(collection, query, **options), "stream": True}


class SSEReader:
    """Server-sent events, a line at a time, to :class:`AnswerEvent`."""

    def __init__(self):
        self._event, self._data = "", []

    def feed(self, line: str) -> AnswerEvent | None:
        if line.startswith("event:"):
            self._event = line[6:].strip()
        elif line.startswith("data:"):
            self._data.append(line[5:].lstrip())
        elif not line.strip() and self._data:
            event, raw = self._event or "delta", "\n".join(self._data)
            self._event, self._data = "", []
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise CascadeAPIError(
                    None, "InvalidResponse", f"event {event!r}: not JSON: {e}", raw
                ) from None
            return _answer_event(event, data)
        return None

    def close(self) -> AnswerEvent | None:
        return self.feed("")


def _answer_event(event: str, data: dict[str, Any]) -> AnswerEvent:
    if event == "error":
        err = data.get("error", {})
        raise CascadeAPIError(None, str(err.get("type", "StreamError")), str(err.get("message", "")), data)
    if event == "citations":
        return AnswerEvent(
            event, citations=[Citation.from_json(p) for p in data.get("passages", [])], data=data
        )
    if event == "done":
        return AnswerEvent(event, text=data.get("answer", ""), cited=list(data.get("cited", [])), data=data)
    if event in ("delta", "message"):
        return AnswerEvent("delta", text=data.get("delta", ""), data=data)
    return AnswerEvent(event, data=data)


def check_documents(documents: Any) -> None:
    if isinstance(documents, (str, bytes, Mapping, Document)):
        raise TypeError(
            "ingest takes an iterable of documents (dicts or cascade Documents), not one document"
        )

"""Documents from request bodies and uploaded files (JSON, NDJSON/JSONL, CSV/TSV, text,
Markdown, HTML). Plain functions: the routes call them, and so can anything else.

In JSON and NDJSON, a document object's fields other than ``id`` (or ``_id``), ``text``,
``title`` and ``metadata`` become metadata (:class:`~cascade.api.schemas.DocumentIn`), as in
Elasticsearch or Typesense; a key given both ways must carry the same value."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path, PurePosixPath

from pydantic import TypeAdapter, ValidationError

from cascade.indexing.corpus import read_corpus
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.jsonl import read_jsonl
from cascade.retrieval.types import Document

from .schemas import DocumentIn

_DOC = TypeAdapter(DocumentIn)
_TEXT_TYPES = {
    ".txt": "folder",
    ".md": "folder",
    ".html": "folder",
    ".htm": "folder",
    ".csv": "csv",
    ".tsv": "tsv",
}


def _problem(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def _document(obj) -> Document:
    """One document object; refused with the bare reason (the caller adds where it was)."""
    try:
        d = _DOC.validate_python(obj)
    except ValidationError as e:
        raise InvalidInput(_problem(e)) from None
    return Document(d.id, d.text, d.title, d.metadata)


def parse_json_documents(body: bytes, source: str = "body") -> list[Document]:
    """``{"documents": [...]}``, a bare list of document objects, or one document object."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{source}: invalid JSON ({e})") from None
    if isinstance(data, dict) and set(data) == {"documents"}:
        data = data["documents"]
    elif isinstance(data, dict) and "documents" not in data and "text" in data:
        data = [data]  # one document
    if not isinstance(data, list) or not data:
        raise InvalidInput(
            f'{source}: expected {{"documents": [...]}}, a non-empty list of documents or one document object'
        )
    docs = []
    for i, obj in enumerate(data):
        try:
            docs.append(_document(obj))
        except InvalidInput as e:
            raise InvalidInput(f"{source}: documents[{i}]: {e}") from None
    return docs


def parse_ndjson(body: bytes, source: str = "body") -> list[Document]:
    """One document object per line; blank lines are skipped. A bad line is refused as
    ``SOURCE:LINE: reason`` (the API answers it 422)."""
    docs = list(read_jsonl(body.splitlines(), source, _document))
    if not docs:
        raise InvalidInput(f"{source}: no documents")
    return docs


def documents_from_upload(filename: str, data: bytes) -> list[Document]:
    """Documents of one uploaded file, by its extension. A text, Markdown or HTML file is
    one document whose id is the file name."""
    name = PurePosixPath(filename or "").name
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return parse_ndjson(data, name)
    if suffix == ".json":
        return parse_json_documents(data, name)
    if suffix not in _TEXT_TYPES or not name:
        raise InvalidInput(
            f"{name or 'upload'}: unsupported file type; use .json .jsonl .ndjson .csv .tsv .txt .md .html"
        )
    with tempfile.TemporaryDirectory(prefix="cascade-upload-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        fmt = _TEXT_TYPES[suffix]
        try:
            docs = list(read_corpus(Path(tmp) if fmt == "folder" else path, fmt))
        except UnicodeDecodeError:
            raise InvalidInput(f"{name}: not UTF-8") from None
    if not docs:
        raise InvalidInput(f"{name}: no documents")
    return docs

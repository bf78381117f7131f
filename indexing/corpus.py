"""Corpus readers. Every reader streams :class:`Document` objects, one at a time, so an
8.8M-passage collection is never held as one Python list.

Formats: BEIR ``corpus.jsonl``, MS MARCO ``collection.tsv``, plain JSONL or CSV with
chosen id / text / title fields, and a folder of ``.txt`` / ``.md`` / ``.html`` files.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from html.parser import HTMLParser
from pathlib import Path

from cascade.retrieval import jsonl
from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.types import Document

FOLDER_EXTENSIONS = (".txt", ".md", ".html", ".htm")


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path} does not exist")
    return open(path, encoding="utf-8", newline="")


def read_jsonl(
    path: str | Path,
    id_field: str = "_id",
    text_field: str = "text",
    title_field: str | None = "title",
    metadata_field: str | None = "metadata",
) -> Iterator[Document]:
    """One document per JSON line, read by :func:`cascade.retrieval.jsonl.read_jsonl`: a
    malformed line, or one without the id and text fields, fails with ``FILE:LINE``."""

    document = partial(Document.from_json, id_field=id_field, text_field=text_field, title_field=title_field,
                       metadata_field=metadata_field)  # fmt: skip
    return jsonl.read_jsonl(path, str(path), document)


def read_csv(
    path: str | Path,
    id_field: str = "id",
    text_field: str = "text",
    title_field: str | None = "title",
    delimiter: str = ",",
) -> Iterator[Document]:
    """A CSV (or TSV) file with a header row; other columns become metadata."""
    csv.field_size_limit(sys.maxsize)
    with _open(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = {id_field, text_field} - set(reader.fieldnames or [])
        if missing:
            raise InvalidInput(f"{path}: no column(s) {sorted(missing)} (columns: {reader.fieldnames})")
        for row in reader:
            if None in row:  # more cells than header columns
                raise InvalidInput(f"{path}:{reader.line_num}: more fields than the header has")
            meta = {k: v for k, v in row.items() if k not in (id_field, text_field, title_field)}
            yield Document(row[id_field], row[text_field] or "", (row.get(title_field) or "") if title_field else "", meta)


def read_msmarco_collection(path: str | Path) -> Iterator[Document]:
    """MS MARCO ``collection.tsv``: ``pid<TAB>passage`` with no header."""
    with _open(path) as f:
        for lineno, line in enumerate(f, start=1):
            pid, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise InvalidInput(f"{path}:{lineno}: expected 'id<TAB>text'")
            yield Document(pid, text)


class _TextOfHTML(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data.strip()
        elif not self._skip and data.strip():
            self.parts.append(data.strip())


def read_folder(root: str | Path, extensions: Sequence[str] = FOLDER_EXTENSIONS) -> Iterator[Document]:
    """Every matching file under ``root`` (sorted); the id is the path relative to ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise NotFound(f"{root} is not a directory")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions):
        raw = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() in (".html", ".htm"):
            parser = _TextOfHTML()
            parser.feed(raw)
            yield Document(rel, re.sub(r"\s+", " ", " ".join(parser.parts)), parser.title, {"path": rel})
        else:
            yield Document(rel, raw, "", {"path": rel})


def read_corpus(path: str | Path, fmt: str = "auto", **fields) -> Iterator[Document]:
    """Pick a reader by ``fmt`` (``beir``, ``jsonl``, ``csv``, ``tsv``, ``msmarco``, ``folder``)
    or, with ``auto``, by what ``path`` is."""
    path = Path(path)
    if fmt == "auto":
        if path.is_dir():
            if (path / "corpus.jsonl").is_file():
                fmt = "beir"
            elif (path / "collection.tsv").is_file():
                fmt = "msmarco"
            else:
                fmt = "folder"
        elif path.suffix in (".jsonl", ".json", ".ndjson"):
            fmt = "jsonl"
        elif path.suffix in (".csv", ".tsv"):
            fmt = path.suffix[1:]
        elif not path.exists():
            raise NotFound(f"{path} does not exist")
        else:
            raise InvalidInput(f"cannot tell the format of {path}; pass a format explicitly")
    readers = {
        "beir": lambda: read_jsonl(path / "corpus.jsonl" if path.is_dir() else path, **fields),
        "jsonl": lambda: read_jsonl(path, **fields),
        "csv": lambda: read_csv(path, **fields),
        "tsv": lambda: read_csv(path, delimiter="\t", **fields),
        "msmarco": lambda: read_msmarco_collection(path / "collection.tsv" if path.is_dir() else path),
        "folder": lambda: read_folder(path),
    }
    if fmt not in readers:
        raise InvalidInput(f"unknown corpus format {fmt!r}; valid: {', '.join(readers)}")
    return readers[fmt]()

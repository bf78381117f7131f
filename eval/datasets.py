"""Evaluation datasets: a corpus, queries and relevance judgments for one split.

Layouts read from a directory:

- BEIR: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv`` (header row).
- MS MARCO passage / TREC DL: ``collection.tsv``, ``queries.<split>[.small].tsv`` and
  ``qrels.<split>[.small].tsv`` or ``qrels.<split>.txt`` in TREC format. Splits named
  ``dl19``/``dl20``/... carry graded judgments; their binary metrics use relevance >= 2,
  the official TREC DL passage cut-off.

A BEIR dataset given by name (``scifact``, ``nfcorpus``, ...) is downloaded from the
official BEIR location into the cache once, with its SHA-256 recorded and checked on
every later use.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cascade.indexing.corpus import read_jsonl as read_jsonl_documents
from cascade.indexing.corpus import read_msmarco_collection
from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.jsonl import read_jsonl
from cascade.retrieval.types import Document, Qrels, Query

log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
BEIR_DATASETS = (
    "arguana climate-fever cqadupstack dbpedia-entity fever fiqa hotpotqa msmarco nfcorpus nq "
    "quora scidocs scifact trec-covid webis-touche2020"
).split()


def cache_dir() -> Path:
    """Where Cascade keeps downloads and built indexes (``$CASCADE_CACHE`` or ~/.cache/cascade)."""
    return Path(os.environ.get("CASCADE_CACHE", Path.home() / ".cache" / "cascade")).expanduser()


@dataclass
class Dataset:
    """One split of a dataset. ``corpus()`` streams; queries and qrels are small and loaded."""

    name: str
    root: Path
    split: str
    layout: str
    queries: list[Query]
    qrels: Qrels
    relevance_level: int = 1
    _corpus_file: Path = field(default=Path(), repr=False)

    def corpus(self) -> Iterator[Document]:
        if self.layout == "beir":
            return read_jsonl_documents(self._corpus_file)
        return read_msmarco_collection(self._corpus_file)

    @property
    def fingerprint(self) -> str:
        """Identifies the corpus content cheaply (path, size, mtime): keys the index cache."""
        st = self._corpus_file.stat()
        raw = f"{self._corpus_file.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def read_qrels_tsv(path: Path) -> Qrels:
    """BEIR qrels: ``query-id<TAB>corpus-id<TAB>score`` with a header row."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        for lineno, row in enumerate(rows, start=1):
            if lineno == 1 and row and not row[-1].lstrip("-").isdigit():
                continue  # header
            if len(row) < 3:
                raise InvalidInput(f"{path}:{lineno}: expected query-id, corpus-id, score")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError:
                raise InvalidInput(f"{path}:{lineno}: score {row[2]!r} is not an integer") from None
    return qrels


def read_qrels_trec(path: Path) -> Qrels:
    """TREC qrels: ``qid iteration docid relevance``, whitespace separated."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise InvalidInput(f"{path}:{lineno}: expected 'qid iter docid rel'")
            try:
                qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
            except ValueError:
                raise InvalidInput(f"{path}:{lineno}: relevance {parts[3]!r} is not an integer") from None
    return qrels


def _query(obj) -> Query:
    """A BEIR ``queries.jsonl`` line: ``{"_id": ..., "text": ...}``."""
    if not isinstance(obj, dict) or "_id" not in obj or "text" not in obj:
        raise InvalidInput("expected an object with '_id' and 'text'")
    return Query(str(obj["_id"]), str(obj["text"] or ""))


def read_queries_tsv(path: Path) -> list[Query]:
    """MS MARCO / TREC topics: ``qid<TAB>text``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            qid, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise InvalidInput(f"{path}:{lineno}: expected 'qid<TAB>text'")
            out.append(Query(qid, text))
    return out


def _first(root: Path, names: list[str]) -> Path:
    for n in names:
        if (root / n).is_file():
            return root / n
    raise NotFound(f"{root}: none of {', '.join(names)} found")


def _load_dir(root: Path, split: str, name: str) -> Dataset:
    if (root / "corpus.jsonl").is_file():
        qrels_file = root / "qrels" / f"{split}.tsv"
        if not qrels_file.is_file():
            splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
            raise NotFound(f"{root}: no split {split!r} (qrels/{split}.tsv); available: {', '.join(splits) or 'none'}")
        qrels = read_qrels_tsv(qrels_file)
        queries = list(read_jsonl(root / "queries.jsonl", convert=_query))
        layout, corpus_file, level = "beir", root / "corpus.jsonl", 1
    elif (root / "collection.tsv").is_file():
        queries = read_queries_tsv(_first(root, [f"queries.{split}.small.tsv", f"queries.{split}.tsv", f"topics.{split}.tsv"]))
        qfile = _first(root, [f"qrels.{split}.small.tsv", f"qrels.{split}.tsv", f"qrels.{split}.txt"])
        qrels = read_qrels_trec(qfile)
        layout, corpus_file = "msmarco", root / "collection.tsv"
        level = 2 if split.startswith("dl") else 1
    else:
        raise NotFound(f"{root} holds neither a BEIR dataset (corpus.jsonl) nor MS MARCO (collection.tsv)")
    judged = [q for q in queries if q.id in qrels]
    if not judged:
        raise InvalidInput(f"{root}: no query of split {split!r} has judgments")
    return Dataset(name, root, split, layout, judged, qrels, level, corpus_file)


def load_dataset(dir_or_name: str | Path, split: str = "test") -> Dataset:
    """A dataset from a directory, or a BEIR dataset by name (downloaded once, then cached).

    Raises:
        NotFound: no such directory, unknown name, or the download is impossible (no network).
    """
    path = Path(dir_or_name).expanduser()
    if path.is_dir():
        return _load_dir(path, split, path.name)
    name = str(dir_or_name)
    if name in BEIR_DATASETS:
        return _load_dir(download_beir(name), split, name)
    raise NotFound(
        f"dataset {name!r} is neither a directory nor a BEIR dataset name ({', '.join(BEIR_DATASETS)})"
    )


def download_beir(name: str, root: Path | None = None) -> Path:
    """Fetch and unpack a BEIR dataset into the cache (atomically); return its directory."""
    root = root or cache_dir() / "datasets"
    target = root / name
    digest_file = root / f"{name}.zip.sha256"
    if (target / "corpus.jsonl").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    url = BEIR_URL.format(name=name)
    log.info("downloading %s", url)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        zpath = Path(tmp) / f"{name}.zip"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp, open(zpath, "wb") as out:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise NotFound(f"cannot download BEIR dataset {name!r} from {url} ({e}); "
                           "with no network, pass a local dataset directory") from None
        digest = hashlib.sha256(zpath.read_bytes()).hexdigest()
        if digest_file.is_file() and digest_file.read_text().strip() != digest:
            raise InvalidInput(f"{url} changed: its SHA-256 differs from the one recorded in {digest_file}")
        try:
            with zipfile.ZipFile(zpath) as z:
                z.extractall(tmp)
        except zipfile.BadZipFile:
            raise InvalidInput(f"{url} is not a valid zip archive") from None
        (Path(tmp) / name).rename(target)
        digest_file.write_text(digest)
        (target / "SOURCE.json").write_text(json.dumps({"url": url, "sha256": digest}))
    return target

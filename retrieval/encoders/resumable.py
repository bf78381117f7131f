"""Resumable corpus encoding: embeddings written shard by shard into a work directory.

Each shard (``shard_00000.npz``: vectors, chunks per document, document ids) is written to
a temp file and renamed, then committed to the work dir's manifest (kind ``encoding_work``:
the settings as params, each committed shard with its checksum and size). A build that is
killed restarts at the first shard not committed; a shard is reused only when the work
directory was made with the same settings, the shard still matches its checksum and holds
the same document ids as the stream now, so a changed corpus or model, or a damaged shard,
is re-encoded instead of mixed in.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cascade.retrieval.errors import IndexMismatch, InvalidInput, NotFound
from cascade.retrieval.progress import progress
from cascade.retrieval.storage import (
    FileEntry,
    Manifest,
    atomic_file,
    checksum_files,
    read_manifest,
    write_manifest,
)
from cascade.retrieval.types import Document

log = logging.getLogger(__name__)

KIND = "encoding_work"
FORMAT_VERSION = 1
#: The work dir's manifest file. Not ``manifest.json``: a killed build leaves its work dir beside
#: the index it was building, and an index set takes any directory with a ``manifest.json`` for
#: an index.
WORK_MANIFEST = "work.json"
#: A work dir without a manifest holds its settings alone in this file (read and converted).
LEGACY_SETTINGS = "settings.json"

#: Encodes one shard of documents: (vectors, chunk count per document).
ShardEncoder = Callable[[list[Document]], tuple[np.ndarray, np.ndarray]]


def encode_in_shards(
    docs: Iterable[Document],
    encode: ShardEncoder,
    work_dir: str | Path | None,
    settings: dict[str, Any],
    shard_size: int = 2048,
    on_shard: Callable[[int], None] | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode a document stream shard by shard, reusing shards a previous run left.

    Args:
        docs: the corpus; ids must be unique.
        encode: turns a list of documents into ``(vectors, counts)``.
        work_dir: where shards go; ``None`` keeps everything in memory (not resumable).
        settings: whatever decides the vectors (model, pooling, chunking...), JSON-serializable.
        shard_size: documents per shard.
        on_shard: called with each shard number once the shard is stored (progress, tests).
        show_progress: a progress bar over documents.

    Returns:
        ``(doc_ids, vectors, counts)`` for the whole corpus, in stream order.

    Raises:
        InvalidInput: an empty corpus or a duplicate document id.
    """
    if shard_size < 1:
        raise InvalidInput(f"shard_size must be >= 1, got {shard_size}")
    work = Path(work_dir) if work_dir is not None else None
    if work is not None:
        _prepare(work, {**settings, "shard_size": shard_size})
    ids_parts, vec_parts, count_parts, seen = [], [], [], set()
    stream = iter(docs)
    with progress(desc="encode corpus", unit="doc", enabled=show_progress) as bar:
        for shard in itertools.count():
            batch = list(itertools.islice(stream, shard_size))
            if not batch:
                break
            ids = np.array([d.id for d in batch], dtype=str)
            for doc_id in ids.tolist():
                if doc_id in seen:
                    raise InvalidInput(f"duplicate document id {doc_id!r}")
                seen.add(doc_id)
            stored = _read_shard(work, shard, ids) if work is not None else None
            if stored is None:
                vectors, counts = encode(batch)
                if work is not None:
                    _write_shard(work, shard, ids, vectors, counts)
            else:
                vectors, counts = stored
            ids_parts.append(ids)
            vec_parts.append(vectors)
            count_parts.append(np.asarray(counts, dtype=np.int64))
            bar.update(len(batch))
            if on_shard is not None:
                on_shard(shard)
    if not ids_parts:
        raise InvalidInput("the corpus is empty: nothing to index")
    return np.concatenate(ids_parts), np.concatenate(vec_parts), np.concatenate(count_parts)


def _prepare(work: Path, settings: dict[str, Any]) -> None:
    """Keep a work dir made with the same settings whose shards match their checksums; else
    start it over, empty."""
    wanted = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
    manifest = _open(work)
    if manifest is not None and manifest.params == wanted:
        if manifest.files:
            log.info("resuming from %s: %d shards already encoded", work, len(manifest.files))
        return
    if work.exists():
        log.info("%s was made with other settings: starting over", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_manifest(work, Manifest(KIND, FORMAT_VERSION, wanted), WORK_MANIFEST)


def _open(work: Path) -> Manifest | None:
    """The work dir's manifest with every shard's checksum verified (a work dir with only
    ``settings.json`` is converted first); ``None`` when there is none or it cannot be trusted."""
    if not (work / WORK_MANIFEST).is_file() and (work / LEGACY_SETTINGS).is_file():
        _convert_legacy(work)
    try:
        return read_manifest(work, KIND, (FORMAT_VERSION,), verify=True, name=WORK_MANIFEST)
    except NotFound:
        return None
    except IndexMismatch as e:
        log.info("%s", e)
        return None


def _convert_legacy(work: Path) -> None:
    """Give a work dir that has only ``settings.json`` a manifest: those settings, and every
    shard on disk (shards are renamed into place whole, so each one there is complete)."""
    try:
        settings = json.loads((work / LEGACY_SETTINGS).read_text())
    except json.JSONDecodeError:
        return
    if not isinstance(settings, dict):
        return
    shards = sorted(p.name for p in work.glob("shard_*.npz"))
    manifest = Manifest(KIND, FORMAT_VERSION, settings, files=checksum_files(work, shards))
    write_manifest(work, manifest, WORK_MANIFEST)
    (work / LEGACY_SETTINGS).unlink()


def _committed(work: Path) -> dict[str, FileEntry]:
    """The shards the work dir's manifest lists (checked at :func:`_prepare`; sizes again here)."""
    return read_manifest(work, KIND, (FORMAT_VERSION,), name=WORK_MANIFEST).files


def _commit(work: Path, files: Mapping[str, FileEntry]) -> None:
    """Rewrite the work dir's manifest (atomically) with ``files`` as its shards."""
    manifest = read_manifest(work, KIND, (FORMAT_VERSION,), name=WORK_MANIFEST)
    write_manifest(work, dataclasses.replace(manifest, files=dict(files)), WORK_MANIFEST)


def _shard_path(work: Path, shard: int) -> Path:
    return work / f"shard_{shard:05d}.npz"


def _read_shard(work: Path, shard: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    path = _shard_path(work, shard)
    files = _committed(work)
    if path.name not in files:  # absent, or renamed into place by a run killed before its commit
        return None
    with np.load(path, allow_pickle=False) as f:
        if not np.array_equal(f["ids"], ids):
            log.info("%s holds other documents: re-encoding from there", path.name)
            stale = [n for n in files if int(Path(n).stem.split("_")[1]) >= shard]
            _commit(work, {n: e for n, e in files.items() if n not in stale})
            for name in stale:
                (work / name).unlink(missing_ok=True)
            return None
        return f["vectors"], f["counts"]


def _write_shard(work: Path, shard: int, ids: np.ndarray, vectors: np.ndarray, counts: np.ndarray) -> None:
    path = _shard_path(work, shard)
    with atomic_file(path, "wb") as f:
        np.savez(f, ids=ids, vectors=vectors, counts=np.asarray(counts, dtype=np.int64))
    _commit(work, {**_committed(work), **checksum_files(work, [path.name])})

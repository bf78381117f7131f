"""Resumable corpus encoding: embeddings written shard by shard into a work directory.

Each shard (``shard_00000.npz``: vectors, chunks per document, document ids) is written to
a temp file and renamed, so a shard on disk is always whole. A build that is killed
restarts at the first missing shard; a shard is reused only when the work directory was
made with the same settings (``settings.json``) and the shard holds the same document ids
as the stream now, so a changed corpus or model is re-encoded instead of mixed in.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.storage import atomic_file
from cascade.retrieval.types import Document

log = logging.getLogger(__name__)

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
        show_progress: a tqdm bar over documents.

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
    bar = tqdm(desc="encode corpus", unit="doc", disable=not show_progress, mininterval=1)
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
    bar.close()
    if not ids_parts:
        raise InvalidInput("the corpus is empty: nothing to index")
    return np.concatenate(ids_parts), np.concatenate(vec_parts), np.concatenate(count_parts)


def _prepare(work: Path, settings: dict[str, Any]) -> None:
    """Start a work dir, or keep one made with the same settings."""
    marker = work / "settings.json"
    wanted = json.dumps(settings, sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted:
        done = len(list(work.glob("shard_*.npz")))
        if done:
            log.info("resuming from %s: %d shards already encoded", work, done)
        return
    if work.exists():
        log.info("%s was made with other settings: starting over", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    marker.write_text(wanted)


def _shard_path(work: Path, shard: int) -> Path:
    return work / f"shard_{shard:05d}.npz"


def _read_shard(work: Path, shard: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    path = _shard_path(work, shard)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        if not np.array_equal(f["ids"], ids):
            log.info("%s holds other documents: re-encoding from there", path.name)
            for stale in work.glob("shard_*.npz"):
                if int(stale.stem.split("_")[1]) >= shard:
                    stale.unlink()
            return None
        return f["vectors"], f["counts"]


def _write_shard(work: Path, shard: int, ids: np.ndarray, vectors: np.ndarray, counts: np.ndarray) -> None:
    with atomic_file(_shard_path(work, shard), "wb") as f:
        np.savez(f, ids=ids, vectors=vectors, counts=np.asarray(counts, dtype=np.int64))

"""Collection snapshots: one consistent, checksummed archive of a collection, and its restore.

An archive is a plain tar::

    snapshot.json               a Manifest (kind "collection-snapshot"): the collection's name,
                                configuration and document count, and the sha256 and size of
                                every other file in the archive; first, so a reader knows
                                what must follow
    manifest.json               the collection's own manifest
    catalog.sqlite              the catalog at one commit (SQLite's backup, not a raw copy)
    segments/NNNNNNNN/...       that commit's segments (immutable once written)

Consistency: the catalog copy and the segment set are taken together under the collection's
writer lock (:meth:`SegmentedCollection.frozen`), which writers wait on only for the catalog
copy; the segments are then read from a lease while searches and writes go on. So an archive
holds exactly the writes acknowledged before it began, and none half.

Restore unpacks into a hidden directory of the data directory, checks every byte against
``snapshot.json`` (a truncated, bit-flipped or padded archive is refused, and the live
collection is untouched), then swaps it in with renames that :func:`finish_restores`
completes or undoes at the next start if the process dies between them.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from cascade.retrieval.errors import CascadeError, InvalidInput, NotFound
from cascade.retrieval.storage import (
    MANIFEST,
    FileMismatch,
    Manifest,
    atomic_file,
    checksum_files,
    read_manifest,
    write_manifest,
)

from .collection import KIND, SegmentedCollection
from .config import check_name

KIND_SNAPSHOT = "collection-snapshot"
FORMAT_VERSION = 1
ARCHIVE_MANIFEST = "snapshot.json"
_SQLITE_SIDE_FILES = ("-wal", "-shm")  # a reader's empty WAL and shared-memory index: no data


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot is: its name, the collection it holds, the archive's size and sha256
    (of the whole file, to compare a copy with), when and how many documents."""

    name: str
    collection: str
    size: int
    sha256: str
    created: str
    num_documents: int

    def to_json(self) -> dict:
        return asdict(self)


class _HashingWriter:
    """A file wrapper that hashes what goes through it (the archive's sha256 in one pass)."""

    def __init__(self, f):
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.f.write(data)


def write_snapshot(coll: SegmentedCollection, out: Path, name: str) -> SnapshotInfo:
    """Write ``coll`` at its current commit as the archive ``out`` (atomically: a killed
    snapshot leaves no partial file under that name).

    Raises:
        NotFound: the collection was closed (dropped or restored over) meanwhile.
    """
    out = Path(out)
    work = out.parent / f".{out.name}.work-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        with coll.frozen(work / "catalog.sqlite") as (segments, num_docs):
            files = {"catalog.sqlite": work / "catalog.sqlite", MANIFEST: coll.root / MANIFEST}
            for seg in segments:
                for f in sorted(p for p in seg.rglob("*") if p.is_file()):
                    if not f.name.endswith(_SQLITE_SIDE_FILES):
                        files[f"segments/{seg.name}/{f.relative_to(seg).as_posix()}"] = f
            entries = {n: checksum_files(p.parent, [p.name])[p.name] for n, p in files.items()}
            manifest = Manifest(
                KIND_SNAPSHOT,
                FORMAT_VERSION,
                {"collection": coll.name, "config": coll.config.model_dump(mode="json")},
                num_docs=num_docs,
                files=entries,
            )
            head = json.dumps(manifest.to_json(), indent=2).encode()
            with atomic_file(out, "wb") as raw:
                sink = _HashingWriter(raw)
                with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    _add_bytes(tar, ARCHIVE_MANIFEST, head)
                    for arcname, path in files.items():
                        tar.add(path, arcname=arcname, recursive=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SnapshotInfo(name, coll.name, sink.size, sink.h.hexdigest(), manifest.created or "", num_docs)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def unpack_snapshot(archive: Path, dest: Path) -> Manifest:
    """Unpack ``archive`` into the new directory ``dest`` and verify it: every file the
    archive's manifest lists, with its size and sha256, and nothing else.

    Returns:
        The archive's manifest (the collection's name and configuration in its params).

    Raises:
        NotFound: no such archive file. InvalidInput: anything else wrong with it (truncated,
        corrupted, not a snapshot, unsafe member names); ``dest`` is then removed.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise NotFound(f"snapshot archive {archive} does not exist")
    dest.mkdir(parents=True)
    try:
        names = _extract(archive, dest)
        try:
            manifest = read_manifest(
                dest, KIND_SNAPSHOT, (FORMAT_VERSION,), verify=True, name=ARCHIVE_MANIFEST
            )
        except FileMismatch as e:
            raise InvalidInput(
                f"snapshot archive {archive} is damaged: {e.name} does not match its checksum"
            ) from None
        except CascadeError as e:
            problem = str(e).replace(f"{dest}/", "").replace(str(dest), "the archive")
            raise InvalidInput(f"snapshot archive {archive} is damaged: {problem}") from None
        extra = sorted(names - set(manifest.files) - {ARCHIVE_MANIFEST})
        if extra:
            raise InvalidInput(f"snapshot archive {archive} is damaged: {extra[0]} is not in its manifest")
        if {MANIFEST, "catalog.sqlite"} - set(manifest.files):
            raise InvalidInput(f"snapshot archive {archive} is not a collection snapshot (no catalog)")
        return manifest
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract(archive: Path, dest: Path) -> set[str]:
    """Regular files only, with relative names inside ``dest``; the tar's own damage (a bad
    header checksum, data cut short) is an InvalidInput naming the archive."""
    names: set[str] = set()
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or not parts or member.name.startswith("/") or ".." in parts:
                    raise InvalidInput(
                        f"snapshot archive {archive} holds an unexpected entry {member.name!r}"
                    )
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with open(target, "wb") as f:
                    shutil.copyfileobj(src, f)
                if target.stat().st_size != member.size:
                    raise InvalidInput(f"snapshot archive {archive} is truncated in {member.name}")
                names.add(PurePosixPath(*parts).as_posix())
    except (tarfile.TarError, EOFError) as e:
        raise InvalidInput(f"snapshot archive {archive} is damaged or truncated: {e}") from None
    if not names:
        raise InvalidInput(f"snapshot archive {archive} is empty")
    return names


def rename_collection(root: Path, name: str) -> None:
    """Make the unpacked collection at ``root`` the collection ``name`` (its manifest holds
    the name in its configuration)."""
    manifest = read_manifest(root, KIND)
    config = {**manifest.params["config"], "name": check_name(name)}
    write_manifest(root, Manifest(KIND, manifest.format_version, {**manifest.params, "config": config}))


# -- restore renames, and finishing them after a crash ---------------------------------------

_READY = ".restored-"


def ready_path(collections_root: Path, name: str) -> Path:
    """Where a verified restore of ``name`` waits for its swap."""
    return collections_root / f"{_READY}{name}"


def finish_restores(collections_root: Path) -> None:
    """At start-up: a verified restore whose target is gone (the process died between moving
    the old collection away and moving the new one in) is moved in; one whose target is still
    there never replaced it (the restore was not acknowledged) and is removed, as are
    half-unpacked ones."""
    for tmp in collections_root.glob(".restore-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for ready in collections_root.glob(f"{_READY}*"):
        target = collections_root / ready.name[len(_READY) :]
        if target.exists():
            shutil.rmtree(ready, ignore_errors=True)
        else:
            ready.rename(target)


# -- where the service keeps them ------------------------------------------------------------


class SnapshotStore:
    """``DATA_DIR/snapshots/COLLECTION/NAME.tar`` with ``NAME.json`` beside it (the
    :class:`SnapshotInfo`, so listing reads no archive)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for partial in self.root.glob("*/.*"):  # snapshots killed half-way (temp archive, work dir)
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)

    def path(self, collection: str, name: str) -> Path:
        """Raises: InvalidInput (a bad name), NotFound (no such snapshot)."""
        check_name(collection)
        check_name(name)
        path = self.root / collection / f"{name}.tar"
        if not path.is_file():
            raise NotFound(f"collection {collection!r} has no snapshot {name!r}")
        return path

    def create(self, coll: SegmentedCollection) -> SnapshotInfo:
        name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        info = write_snapshot(coll, self.root / coll.name / f"{name}.tar", name)
        with atomic_file(self.root / coll.name / f"{name}.json") as f:
            f.write(json.dumps(info.to_json()))
        return info

    def list(self, collection: str) -> list[SnapshotInfo]:
        check_name(collection)
        out = []
        for meta in sorted((self.root / collection).glob("*.json")):
            if meta.with_suffix(".tar").is_file():
                out.append(SnapshotInfo(**json.loads(meta.read_text())))
        return out

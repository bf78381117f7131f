"""Index directories: one manifest type, plain ``.npy``/``.json`` payloads, atomic writes.

Every directory Cascade writes (an index of any family, a sharded index, a collection, a
resumable encoding work dir) describes itself with one :class:`Manifest`, written by
:func:`write_manifest` and read back by :func:`read_manifest`, so the on-disk contract (the
manifest keys, checksums and sizes of the files, format versions, atomic replace, reading
the shapes older Cascade versions wrote) lives in one place. Index families save through
:func:`write_index` and load through :func:`read_index`; arrays are loaded memory-mapped and
nothing is pickled.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from .errors import IndexMismatch, NotFound

MANIFEST = "manifest.json"

#: Version of the manifest's own shape (not of the payload, which ``format_version`` tracks per
#: kind). 1 (no ``manifest_version`` key; read and converted, see :func:`_from_v1`); 2: this shape.
MANIFEST_VERSION = 2


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class FileEntry:
    """What the manifest records of one file (or copied directory) so a damaged or swapped one
    is refused instead of read. ``None``: not recorded (a version-1 manifest has no sizes, and
    no checksum for a copied directory); that check is skipped."""

    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class Manifest:
    """The description of one Cascade directory.

    Attributes:
        kind: what the directory holds: an index family (``"bm25"``, ``"dense"``...),
            ``"sharded"``, ``"collection"``, ``"encoding_work"``.
        format_version: version of that kind's payload layout; readers name the ones they read.
        params: the kind's declared fields (build parameters, configuration, encoder settings).
        num_docs: documents indexed, for kinds that know it when they write; else ``None``.
        files: path relative to the directory -> its checksum and size. Only files that are
            immutable once written are listed; a kind with a mutable commit point of its own
            (a collection's catalog) lists none.
        created: UTC time the manifest was made (ISO 8601); ``None`` when it does not say.
    """

    kind: str
    format_version: int
    params: dict[str, Any]
    num_docs: int | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    created: str | None = field(default_factory=_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "kind": self.kind,
            "format_version": self.format_version,
            "num_docs": self.num_docs,
            "params": self.params,
            "files": {n: {"sha256": e.sha256, "size": e.size} for n, e in self.files.items()},
            "created": self.created,
        }


class FileMismatch(IndexMismatch):
    """A file listed in a manifest whose size or checksum differs from the one recorded;
    ``name`` is its path relative to the directory, for callers that say which part is wrong."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entry(path: Path) -> FileEntry:
    """Checksum and size of a file; of a directory, a digest over its files' relative paths and
    checksums, and their total size."""
    if not path.is_dir():
        return FileEntry(_sha256(path), path.stat().st_size)
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{_sha256(f)}\n".encode())
        size += f.stat().st_size
    return FileEntry(h.hexdigest(), size)


def checksum_files(root: str | Path, names: Iterable[str]) -> dict[str, FileEntry]:
    """The manifest entries of ``names`` (paths relative to ``root``), as they are on disk now."""
    return {name: _entry(Path(root) / name) for name in names}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make the renames and creations in directory ``path`` durable (a power loss keeps them)."""
    _fsync_dir(Path(path))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a temp file named for its writer's pid is garbage
    once the writer is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _recover(path: Path) -> None:
    """Finish a replace that was killed between its two renames."""
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.exists():
        old.rename(path)
    elif path.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp dir beside ``path``; on success it replaces ``path`` whole.

    If the block raises (or the process dies), ``path`` keeps its previous content and the
    temp dir is removed (or, after a kill, left as ``.NAME.tmp-PID-*`` garbage that the next
    write of ``path`` removes once process PID is gone).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    prefix = f".{path.name}.tmp-"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*"):
        pid = stale.name[len(prefix) :].partition("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        old = path.with_name(path.name + ".old")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_index(
    path: str | Path,
    kind: str,
    format_version: int,
    params: Mapping[str, Any],
    num_docs: int,
    arrays: Mapping[str, np.ndarray],
    json_files: Mapping[str, Any] | None = None,
    copies: Mapping[str, str | Path] | None = None,
) -> Manifest:
    """Write ``arrays`` as ``NAME.npy``, ``json_files`` as ``NAME.json``, copy ``copies``
    (name -> file or directory written by another engine, e.g. a Lucene index) and the manifest."""
    with atomic_dir(path) as tmp:
        names = []
        for name, src in (copies or {}).items():
            src = Path(src)
            if src.is_dir():
                shutil.copytree(src, tmp / name)
            else:
                shutil.copyfile(src, tmp / name)
            names.append(name)
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            names.append(f"{name}.npy")
        for name, obj in (json_files or {}).items():
            (tmp / f"{name}.json").write_text(json.dumps(obj))
            names.append(f"{name}.json")
        manifest = Manifest(kind, format_version, dict(params), int(num_docs), checksum_files(tmp, names))
        write_manifest(tmp, manifest)
    return manifest


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yield a file open on a temp name beside ``path``; on success it is fsynced and renamed
    over ``path``, so a killed write leaves the previous file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_manifest(path: str | Path, manifest: Manifest, name: str = MANIFEST) -> None:
    """Write ``path/name`` (the manifest of the directory ``path``) atomically: temp file, fsync,
    rename. The files it lists are written first, so the manifest is what commits them.
    ``name`` is for a directory that must not look like an index to a scan for ``manifest.json``."""
    with atomic_file(Path(path) / name) as f:
        f.write(json.dumps(manifest.to_json(), indent=2))


def manifest_digest(path: str | Path) -> str:
    """SHA-256 of an index's manifest: identifies that exact build of the index."""
    return _sha256(Path(path) / MANIFEST)


def read_manifest(
    path: str | Path,
    kind: str | None = None,
    format_versions: Sequence[int] | None = None,
    verify: bool = False,
    name: str = MANIFEST,
) -> Manifest:
    """Read and check the manifest of the directory ``path`` (a version-1 manifest is converted
    to this shape).

    Every listed file must exist with its recorded size (a stat per file); ``verify`` also
    recomputes the checksums (reads every byte).

    Args:
        kind: refuse a directory of another kind (``None``: any).
        format_versions: the payload format versions the caller reads (``None``: any).
        verify: compare every listed file's sha256 with the manifest's.
        name: the manifest's file name.

    Raises:
        NotFound: no manifest.
        IndexMismatch: not a valid manifest, a manifest version this Cascade does not know,
            another kind or format version, or a listed file missing.
        FileMismatch: a listed file whose size or checksum differs (its name is in the message).
    """
    path = Path(path)
    _recover(path)
    f = path / name
    if not f.is_file():
        raise NotFound(f"{path} is not an index directory (no {name})")
    try:
        manifest = _parse(json.loads(f.read_text()), f)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise IndexMismatch(f"{f} is not a valid manifest: {e}") from None
    if kind is not None and manifest.kind != kind:
        raise IndexMismatch(f"{path} holds a {manifest.kind!r} index, not a {kind!r} index")
    if format_versions is not None and manifest.format_version not in format_versions:
        raise IndexMismatch(
            f"{path} has format version {manifest.format_version}; this Cascade reads {tuple(format_versions)}"
        )
    _check_files(path, manifest.files, verify)
    return manifest


def _parse(raw: Any, where: Path) -> Manifest:
    if not isinstance(raw, dict):
        raise TypeError("not a JSON object")
    version = raw.get("manifest_version", 1)
    if type(version) is not int or not 1 <= version <= MANIFEST_VERSION:
        raise IndexMismatch(
            f"{where} has manifest version {version!r}; this Cascade reads versions 1 to {MANIFEST_VERSION}"
        )
    if version == 1:
        raw = _from_v1(raw)
    files = {}
    for name, entry in _typed(raw["files"], dict, "files").items():
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            raise ValueError(f"file name {name!r} is outside the directory")
        sha, size = entry["sha256"], entry["size"]
        if not (sha is None or isinstance(sha, str)) or not (size is None or type(size) is int):
            raise TypeError(f"bad entry for {name!r}: {entry!r}")
        files[name] = FileEntry(sha, size)
    num_docs = raw.get("num_docs")
    return Manifest(
        kind=_typed(raw["kind"], str, "kind"),
        format_version=_typed(raw["format_version"], int, "format_version"),
        params=_typed(raw["params"], dict, "params"),
        num_docs=None if num_docs is None else _typed(num_docs, int, "num_docs"),
        files=files,
        created=raw.get("created"),
    )


def _typed(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{what} must be {kind.__name__}, not {value!r}")
    return value


def _from_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A version-1 manifest in this shape. Version 1 maps each file name to its sha256 (``"dir"``
    for a copied directory, not checksummed) without sizes; a sharded index holds its shards'
    manifest digests in ``params["digests"]`` (here: entries for ``shard-NNN/manifest.json``); a
    collection holds its ``config`` at the top level, without ``params`` (here: ``params["config"]``)."""
    top = {"kind", "format_version", "num_docs", "params", "files", "created"}
    params = raw["params"] if "params" in raw else {k: v for k, v in raw.items() if k not in top}
    files = {
        n: {"sha256": None if d == "dir" else d, "size": None}
        for n, d in _typed(raw.get("files", {}), dict, "files").items()
    }
    if raw["kind"] == "sharded" and isinstance(params, dict) and "digests" in params:
        digests = _typed(params["digests"], list, "digests")
        files.update(
            {f"shard-{i:03d}/{MANIFEST}": {"sha256": d, "size": None} for i, d in enumerate(digests)}
        )
        params = {k: v for k, v in params.items() if k != "digests"}
    return {**raw, "params": params, "files": files}


def _check_files(path: Path, files: Mapping[str, FileEntry], verify: bool) -> None:
    for name, entry in files.items():
        fp = path / name
        if not fp.exists():
            rel = Path(name)
            missing = next(p for p in [*reversed(rel.parents[:-1]), rel] if not (path / p).exists())
            raise IndexMismatch(f"{path} is incomplete: {missing.as_posix()} is missing")
        if entry.size is not None and fp.is_file() and (size := fp.stat().st_size) != entry.size:
            raise FileMismatch(
                name, f"{fp} does not match the manifest: {size} bytes, it records {entry.size}"
            )
        if verify and entry.sha256 is not None and _entry(fp).sha256 != entry.sha256:
            raise FileMismatch(name, f"{fp} does not match its sha256 checksum in the manifest")


def read_index(
    path: str | Path, kind: str, format_versions: tuple[int, ...], mmap: bool = True, verify: bool = False
) -> tuple[Manifest, dict[str, np.ndarray], dict[str, Any]]:
    """Load an index written by :func:`write_index`, refusing another kind or format version
    (see :func:`read_manifest`): its manifest, ``NAME.npy`` arrays and ``NAME.json`` objects."""
    path = Path(path)
    manifest = read_manifest(path, kind, format_versions, verify=verify)
    arrays, jsons = {}, {}
    for name in manifest.files:
        fp = path / name
        if fp.is_dir():
            continue
        if name.endswith(".npy"):
            arrays[name[:-4]] = np.load(fp, mmap_mode="r" if mmap else None, allow_pickle=False)
        elif name.endswith(".json"):
            jsons[name[:-5]] = json.loads(fp.read_text())
    return manifest, arrays, jsons

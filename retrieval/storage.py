"""Index directories: a JSON manifest plus plain ``.npy`` arrays, written atomically.

Every index family saves through :func:`write_index` and loads through :func:`read_index`,
so the on-disk contract (manifest keys, checksums, format version, atomic replace) lives
in one place. Arrays are loaded memory-mapped; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import IndexMismatch, NotFound

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    kind: str
    format_version: int
    params: dict[str, Any]
    num_docs: int
    files: dict[str, str]  # file name -> sha256

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format_version": self.format_version,
            "num_docs": self.num_docs,
            "params": self.params,
            "files": self.files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    temp dir is removed (or left as ``.tmp-*`` garbage that the next write ignores).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
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
        files = {}
        for name, src in (copies or {}).items():
            src = Path(src)
            if src.is_dir():
                shutil.copytree(src, tmp / name)
                files[name] = "dir"
            else:
                shutil.copyfile(src, tmp / name)
                files[name] = _sha256(tmp / name)
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            files[f"{name}.npy"] = _sha256(tmp / f"{name}.npy")
        for name, obj in (json_files or {}).items():
            (tmp / f"{name}.json").write_text(json.dumps(obj))
            files[f"{name}.json"] = _sha256(tmp / f"{name}.json")
        manifest = Manifest(kind, format_version, dict(params), int(num_docs), files)
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2))
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


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    """Write only ``path/manifest.json``, atomically: for directories whose other content
    (e.g. shards, each an atomic index of its own) is written before the manifest commits it."""
    with atomic_file(Path(path) / MANIFEST) as f:
        f.write(json.dumps(manifest.to_json(), indent=2))


def manifest_digest(path: str | Path) -> str:
    """SHA-256 of an index's manifest: identifies that exact build of the index."""
    return _sha256(Path(path) / MANIFEST)


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    _recover(path)
    f = path / MANIFEST
    if not f.is_file():
        raise NotFound(f"{path} is not an index directory (no {MANIFEST})")
    try:
        m = json.loads(f.read_text())
        return Manifest(m["kind"], int(m["format_version"]), m["params"], int(m["num_docs"]), m["files"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise IndexMismatch(f"{f} is not a valid manifest: {e}") from None


def read_index(
    path: str | Path, kind: str, format_versions: tuple[int, ...], mmap: bool = True, verify: bool = False
) -> tuple[Manifest, dict[str, np.ndarray], dict[str, Any]]:
    """Load an index written by :func:`write_index`, refusing another kind or format version."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest.kind != kind:
        raise IndexMismatch(f"{path} holds a {manifest.kind!r} index, not a {kind!r} index")
    if manifest.format_version not in format_versions:
        raise IndexMismatch(
            f"{path} has format version {manifest.format_version}; this Cascade reads {format_versions}"
        )
    arrays, jsons = {}, {}
    for name, digest in manifest.files.items():
        fp = path / name
        if not fp.exists():
            raise IndexMismatch(f"{path} is incomplete: {name} is missing")
        if digest == "dir":
            continue
        if verify and _sha256(fp) != digest:
            raise IndexMismatch(f"{fp} does not match its checksum in the manifest")
        if name.endswith(".npy"):
            arrays[name[:-4]] = np.load(fp, mmap_mode="r" if mmap else None, allow_pickle=False)
        elif name.endswith(".json"):
            jsons[name[:-5]] = json.loads(fp.read_text())
    return manifest, arrays, jsons

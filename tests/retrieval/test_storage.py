"""The one manifest type: every kind of directory round-trips through it, damaged or swapped
files are refused naming the file, unknown versions are refused, and the shapes older
versions wrote still load."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cascade.api.service.collection import SegmentedCollection
from cascade.api.service.config import CollectionConfig
from cascade.eval.presets import resolve_pipeline
from cascade.retrieval.encoders import resumable
from cascade.retrieval.errors import IndexMismatch, NotFound
from cascade.retrieval.sharded import ShardedRetriever, shard_name
from cascade.retrieval.storage import (
    MANIFEST,
    MANIFEST_VERSION,
    FileEntry,
    FileMismatch,
    Manifest,
    atomic_dir,
    read_index,
    read_manifest,
    write_index,
    write_manifest,
)
from cascade.retrieval.types import Document, Query

DOCS = [
    Document(str(i), f"text number {i} about cells and {'hearts' if i % 3 else 'neurons'}") for i in range(40)
]
QUERIES = [Query("q1", "cells hearts"), Query("q2", "neurons number")]


def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _raw(path: Path, name: str = MANIFEST) -> dict:
    return json.loads((path / name).read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encode(calls: list[int]):
    def encode(batch):
        calls.append(len(batch))
        return np.array([[float(d.id), 1.0] for d in batch], dtype=np.float32), np.ones(len(batch), np.int64)

    return encode


def _collection(path: Path) -> SegmentedCollection:
    config = CollectionConfig(name="c", pipeline=resolve_pipeline("bm25"), compaction={"background": False})
    return SegmentedCollection.create(path, config)


# -- each kind round-trips ---------------------------------------------------------------


def test_index_round_trip_records_checksums_and_sizes(tmp_path):
    m = write_index(tmp_path / "i", "toy", 1, {"p": 1}, 3, {"a": np.arange(3)}, {"meta": {"x": 1}})
    raw = _raw(tmp_path / "i")
    assert raw["manifest_version"] == MANIFEST_VERSION and raw["kind"] == "toy" and raw["num_docs"] == 3
    a = tmp_path / "i" / "a.npy"
    assert raw["files"]["a.npy"] == {"sha256": _sha(a), "size": a.stat().st_size}
    got, arrays, jsons = read_index(tmp_path / "i", "toy", (1,), verify=True)
    assert got == m and got.files["a.npy"] == FileEntry(_sha(a), a.stat().st_size)
    assert arrays["a"].tolist() == [0, 1, 2] and jsons["meta"] == {"x": 1}


def test_copied_directory_is_checksummed(tmp_path):
    src = tmp_path / "engine"
    (src / "sub").mkdir(parents=True)
    (src / "seg.bin").write_bytes(b"\x00" * 10)
    (src / "sub" / "x").write_bytes(b"abc")
    write_index(tmp_path / "i", "toy", 1, {}, 1, {}, copies={"engine": src})
    assert read_manifest(tmp_path / "i").files["engine"].size == 13
    _flip_byte(tmp_path / "i" / "engine" / "sub" / "x")
    read_index(tmp_path / "i", "toy", (1,))  # sizes of directories are left to verify
    with pytest.raises(FileMismatch, match="engine does not match its sha256 checksum") as e:
        read_index(tmp_path / "i", "toy", (1,), verify=True)
    assert e.value.name == "engine"


def test_sharded_round_trip(tmp_path):
    built = ShardedRetriever.build(DOCS, "bm25", num_shards=3, show_progress=False)
    built.save(tmp_path / "s")
    m = read_manifest(tmp_path / "s", "sharded", (1,), verify=True)
    assert m.num_docs == 40 and m.params == {
        "retriever": "bm25",
        "num_shards": 3,
        "params": {"show_progress": False},
    }
    shard0 = tmp_path / "s" / shard_name(0) / MANIFEST
    assert m.files[f"{shard_name(0)}/{MANIFEST}"] == FileEntry(_sha(shard0), shard0.stat().st_size)
    assert ShardedRetriever.load(tmp_path / "s").search(QUERIES, k=5) == built.search(QUERIES, k=5)


def test_collection_round_trip(tmp_path):
    coll = _collection(tmp_path / "c")
    config = coll.config
    coll.close()
    m = read_manifest(tmp_path / "c", "collection", (1,))
    assert m.files == {} and m.num_docs is None and m.created
    assert m.params == {"config": config.model_dump(mode="json")}
    reopened = SegmentedCollection.open(tmp_path / "c")
    assert reopened.config == config
    reopened.close()


def test_encoding_work_dir_round_trip_and_resume(tmp_path):
    work, calls = tmp_path / "work", []
    ids, vectors, counts = resumable.encode_in_shards(DOCS[:25], _encode(calls), work, {"model": "m"}, 10,
                                                      show_progress=False)  # fmt: skip
    assert calls == [10, 10, 5] and ids.tolist() == [d.id for d in DOCS[:25]]
    m = read_manifest(work, resumable.KIND, (1,), verify=True, name=resumable.WORK_MANIFEST)
    assert m.params == {"model": "m", "shard_size": 10}
    assert sorted(m.files) == ["shard_00000.npz", "shard_00001.npz", "shard_00002.npz"]
    assert not (work / MANIFEST).exists()  # a leftover work dir is not taken for an index
    calls.clear()
    again = resumable.encode_in_shards(
        DOCS[:25], _encode(calls), work, {"model": "m"}, 10, show_progress=False
    )
    assert calls == [] and np.array_equal(again[1], vectors)


def test_work_dir_shard_not_committed_is_encoded_again(tmp_path):
    work, calls = tmp_path / "work", []
    resumable.encode_in_shards(DOCS[:20], _encode(calls), work, {}, 10, show_progress=False)
    m = read_manifest(work, name=resumable.WORK_MANIFEST)
    write_manifest(work, Manifest(m.kind, m.format_version, m.params, files={}), resumable.WORK_MANIFEST)
    calls.clear()  # as if killed after the shards were renamed into place, before their commit
    resumable.encode_in_shards(DOCS[:20], _encode(calls), work, {}, 10, show_progress=False)
    assert calls == [10, 10]


# -- damaged files -----------------------------------------------------------------------


def test_flipped_byte_in_payload_is_caught_naming_the_file(tmp_path):
    write_index(tmp_path / "i", "toy", 1, {}, 3, {"a": np.arange(3), "b": np.ones(3)})
    _flip_byte(tmp_path / "i" / "b.npy")
    read_index(tmp_path / "i", "toy", (1,))  # same size: only verify reads every byte
    with pytest.raises(FileMismatch, match=r"b\.npy does not match its sha256 checksum") as e:
        read_index(tmp_path / "i", "toy", (1,), verify=True)
    assert e.value.name == "b.npy" and isinstance(e.value, IndexMismatch)


def test_resized_or_missing_payload_is_caught_without_verify(tmp_path):
    write_index(tmp_path / "i", "toy", 1, {}, 3, {"a": np.arange(3), "b": np.ones(3)})
    np.save(tmp_path / "i" / "a.npy", np.arange(4))
    with pytest.raises(FileMismatch, match=r"a\.npy does not match the manifest: \d+ bytes"):
        read_index(tmp_path / "i", "toy", (1,))
    (tmp_path / "i" / "a.npy").unlink()
    with pytest.raises(IndexMismatch, match="incomplete: a.npy is missing"):
        read_index(tmp_path / "i", "toy", (1,))


def test_flipped_byte_in_a_shard_manifest_refuses_the_sharded_index(tmp_path):
    ShardedRetriever.build(DOCS, "bm25", num_shards=3, show_progress=False).save(tmp_path / "s")
    shard1 = tmp_path / "s" / shard_name(1) / MANIFEST
    text = shard1.read_text()
    shard1.write_text(text.replace('"kind": "bm25"', '"kind": "bm26"'))  # same size, other bytes
    with pytest.raises(IndexMismatch, match="shard-001 is not the shard this index was built with"):
        ShardedRetriever.load(tmp_path / "s")


def test_flipped_byte_in_a_work_shard_is_encoded_again(tmp_path):
    work, calls = tmp_path / "work", []
    resumable.encode_in_shards(DOCS[:20], _encode(calls), work, {}, 10, show_progress=False)
    _flip_byte(work / "shard_00001.npz", offset=40)
    with pytest.raises(FileMismatch, match="shard_00001.npz"):
        read_manifest(work, verify=True, name=resumable.WORK_MANIFEST)
    calls.clear()
    _, vectors, _ = resumable.encode_in_shards(DOCS[:20], _encode(calls), work, {}, 10, show_progress=False)
    assert calls == [10, 10] and vectors[:, 0].tolist() == [float(d.id) for d in DOCS[:20]]


# -- versions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [({"manifest_version": 99}, "manifest version 99"), ({"format_version": 99}, "format version 99")],
)
def test_unknown_version_is_refused_in_one_line(tmp_path, change, message):
    write_index(tmp_path / "i", "toy", 1, {}, 1, {"a": np.zeros(1)})
    (tmp_path / "i" / MANIFEST).write_text(json.dumps({**_raw(tmp_path / "i"), **change}))
    with pytest.raises(IndexMismatch, match=message) as e:
        read_index(tmp_path / "i", "toy", (1,))
    assert "\n" not in str(e.value)


def test_other_kind_malformed_or_absent_manifest_is_refused(tmp_path):
    write_index(tmp_path / "i", "toy", 1, {}, 1, {"a": np.zeros(1)})
    with pytest.raises(IndexMismatch, match="holds a 'toy' index, not a 'dense' index"):
        read_index(tmp_path / "i", "dense", (1,))
    (tmp_path / "i" / MANIFEST).write_text(json.dumps({**_raw(tmp_path / "i"), "files": {"../x": {}}}))
    with pytest.raises(IndexMismatch, match="not a valid manifest"):
        read_manifest(tmp_path / "i")
    with pytest.raises(NotFound):
        read_manifest(tmp_path / "nothing")


# -- shapes older versions wrote ---------------------------------------------------------


def test_old_index_manifest_loads(tmp_path):
    src = tmp_path / "engine"
    src.mkdir()
    (src / "seg.bin").write_bytes(b"lucene")
    write_index(tmp_path / "i", "toy", 1, {"p": 1}, 3, {"a": np.arange(3)}, copies={"engine": src})
    a = tmp_path / "i" / "a.npy"
    old = {"kind": "toy", "format_version": 1, "num_docs": 3, "params": {"p": 1},
           "files": {"engine": "dir", "a.npy": _sha(a)}, "created": "2024-01-01T00:00:00Z"}  # fmt: skip
    (tmp_path / "i" / MANIFEST).write_text(json.dumps(old, indent=2))
    m, arrays, _ = read_index(tmp_path / "i", "toy", (1,), verify=True)
    assert m.files == {"engine": FileEntry(None, None), "a.npy": FileEntry(_sha(a), None)}
    assert m.params == {"p": 1} and m.num_docs == 3 and arrays["a"].tolist() == [0, 1, 2]
    np.save(a, np.arange(4))
    with pytest.raises(FileMismatch, match="checksum"):
        read_index(tmp_path / "i", "toy", (1,), verify=True)


def test_old_sharded_manifest_loads(tmp_path):
    built = ShardedRetriever.build(DOCS, "bm25", num_shards=3, show_progress=False)
    built.save(tmp_path / "s")
    digests = [_sha(tmp_path / "s" / shard_name(i) / MANIFEST) for i in range(3)]
    old = {"kind": "sharded", "format_version": 1, "num_docs": 40, "created": "2024-01-01T00:00:00Z", "files": {},
           "params": {"retriever": "bm25", "num_shards": 3, "digests": digests, "params": {}}}  # fmt: skip
    (tmp_path / "s" / MANIFEST).write_text(json.dumps(old))
    assert ShardedRetriever.load(tmp_path / "s").search(QUERIES, k=5) == built.search(QUERIES, k=5)
    assert "digests" not in read_manifest(tmp_path / "s").params
    old["params"]["digests"][2] = "0" * 64
    (tmp_path / "s" / MANIFEST).write_text(json.dumps(old))
    with pytest.raises(IndexMismatch, match="shard-002 is not the shard this index was built with"):
        ShardedRetriever.load(tmp_path / "s")


def test_old_collection_manifest_loads(tmp_path):
    coll = _collection(tmp_path / "c")
    coll.upsert([Document("d1", "stem cells become neurons")])
    config = coll.config
    coll.close()
    old = {"kind": "collection", "format_version": 1, "config": config.model_dump(mode="json")}
    (tmp_path / "c" / MANIFEST).write_text(json.dumps(old, indent=2))
    reopened = SegmentedCollection.open(tmp_path / "c")
    assert reopened.config == config and reopened.document_ids() == ["d1"]
    reopened.close()


def test_old_work_dir_is_resumed(tmp_path):
    work, calls = tmp_path / "work", []
    resumable.encode_in_shards(DOCS[:20], _encode(calls), work, {"model": "m"}, 10, show_progress=False)
    (work / resumable.WORK_MANIFEST).unlink()  # the first shape: settings.json and the shards
    (work / "settings.json").write_text(json.dumps({"model": "m", "shard_size": 10}, sort_keys=True))
    calls.clear()
    _, vectors, _ = resumable.encode_in_shards(DOCS[:30], _encode(calls), work, {"model": "m"}, 10,
                                               show_progress=False)  # fmt: skip
    assert calls == [10] and vectors[:, 0].tolist() == [float(d.id) for d in DOCS[:30]]
    assert not (work / "settings.json").exists()
    assert (
        len(read_manifest(work, resumable.KIND, (1,), verify=True, name=resumable.WORK_MANIFEST).files) == 3
    )


# -- atomic replace ----------------------------------------------------------------------


def test_exception_inside_atomic_dir_keeps_old_content(tmp_path):
    write_index(tmp_path / "i", "toy", 1, {}, 1, {"a": np.zeros(1)})
    with pytest.raises(ValueError), atomic_dir(tmp_path / "i") as tmp:
        (tmp / "junk").write_text("half written")
        raise ValueError("boom")
    assert read_index(tmp_path / "i", "toy", (1,))[1]["a"].tolist() == [0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i"]


def test_replace_killed_between_renames_is_recovered(tmp_path):
    write_index(tmp_path / "i", "toy", 1, {}, 1, {"a": np.ones(1)})
    (tmp_path / "i").rename(tmp_path / "i.old")  # as if killed right after the first rename
    assert read_index(tmp_path / "i", "toy", (1,))[1]["a"].tolist() == [1.0]

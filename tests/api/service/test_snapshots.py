"""Snapshots: an archive restores to a collection that answers every search exactly as the
original did at that commit (same name or another), a damaged archive is refused with the live
collection untouched, and a snapshot taken while a writer goes on holds a prefix of its
acknowledged writes."""

import random
import tarfile
import threading
import time

import pytest
from collection_data import make_docs, make_queries

from cascade.api.service.engine import Engine
from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.types import Document

QUERIES = make_queries(25) + ["virus gene", "uniqd7"]


def results(engine: Engine, name: str) -> list:
    _, out = engine.search(name, QUERIES, k=10)
    return [[(h.id, round(h.score, 5), h.document.text) for h in hits] for hits in out.hits]


def state(engine: Engine, name: str) -> tuple:
    coll = engine.collection(name)
    return coll.document_ids(), results(engine, name)


@pytest.fixture
def engine(tmp_path):
    e = Engine(tmp_path / "data", background_compaction=False)
    coll = e.create_collection("c", chunking={"max_tokens": 4096, "overlap": 0})
    docs = make_docs(120)
    coll.upsert(docs[:60])
    coll.upsert(docs[60:])
    coll.upsert([Document(d.id, d.text + " virus gene", d.title, d.metadata) for d in docs[:10]])
    coll.delete(ids=[d.id for d in docs[100:110]])
    yield e
    e.close()


def test_round_trip_same_and_other_name(engine, tmp_path):
    before = state(engine, "c")
    assert len(engine.collection("c").info()["segments"]) == 3  # tombstones and three segments travel
    info = engine.snapshot("c")
    assert [s.name for s in engine.snapshots.list("c")] == [info.name]
    assert info.num_documents == 110 and info.size == engine.snapshots.path("c", info.name).stat().st_size
    # the live collection moves on; the snapshot does not
    coll = engine.writable_collection("c")
    coll.upsert(make_docs(30, start=500))
    coll.delete(ids=["d0", "d1"])
    assert state(engine, "c") != before
    archive = engine.snapshots.path("c", info.name)
    assert engine.restore(archive, "copy")["name"] == "copy"
    assert state(engine, "copy") == before
    assert engine.restore(archive)["name"] == "c"  # over the live one, same name
    assert state(engine, "c") == before
    # both are ordinary collections: they take writes independently and survive a reopen
    engine.writable_collection("copy").upsert(make_docs(3, start=900))
    assert "d900" not in engine.collection("c").document_ids()
    data_dir = engine.root.parent
    engine.close()
    reopened = Engine(data_dir, background_compaction=False)
    try:
        assert state(reopened, "c") == before
        assert sorted(p.name for p in reopened.root.iterdir()) == ["c", "copy"]
    finally:
        reopened.close()


def _damaged(archive, tmp_path) -> list:
    """Truncations at several points, and single bit flips in member headers, in the archive's
    manifest and inside file data (every byte a reader depends on)."""
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    rng = random.Random(0)
    cuts = [len(data) // 3, len(data) // 2, members[-1].offset_data + 1, members[1].offset + 100]
    flips = [members[0].offset_data + 40, members[2].offset + 10]
    flips += [m.offset_data + rng.randrange(m.size) for m in rng.sample([m for m in members if m.size], 6)]
    out = []
    for n in cuts:
        out.append((f"truncated at {n}", data[:n]))
    for pos in flips:
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        out.append((f"bit flipped at {pos}", bytes(flipped)))
    return out


def test_damaged_archives_are_refused_and_change_nothing(engine, tmp_path):
    info = engine.snapshot("c")
    archive = engine.snapshots.path("c", info.name)
    engine.restore(archive, "copy")
    before = {n: state(engine, n) for n in ("c", "copy")}
    listing = sorted(p.name for p in engine.root.iterdir())
    refused = 0
    for what, data in _damaged(archive, tmp_path):
        bad = tmp_path / "bad.tar"
        bad.write_bytes(data)
        for target in ("c", "copy", "new"):
            with pytest.raises(
                InvalidInput, match=r"snapshot archive .*bad\.tar is (damaged|truncated|empty)"
            ):
                engine.restore(bad, target)
            refused += 1
        assert sorted(p.name for p in engine.root.iterdir()) == listing, what  # nothing half-restored
    assert {n: state(engine, n) for n in ("c", "copy")} == before
    print(f"damaged archives refused: {refused}")
    with pytest.raises(NotFound):
        engine.restore(tmp_path / "nope.tar")
    with pytest.raises(NotFound, match="no snapshot"):
        engine.snapshots.path("c", "nope")


def test_snapshot_while_writing_holds_a_prefix_of_acknowledged_writes(engine):
    batches = [make_docs(8, seed=i, start=1000 + 8 * i, prefix="w") for i in range(200)]
    acked, stop, errors = [0], threading.Event(), []
    coll = engine.writable_collection("c")

    def writer():
        for batch in batches:
            if stop.is_set():
                return
            coll.upsert(batch)
            acked[0] += 1

    def reader():
        while not stop.is_set():
            try:
                engine.search("c", QUERIES[:3], k=5)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    infos = []
    try:
        for _ in range(3):
            while acked[0] < 3 + 10 * len(infos):
                time.sleep(0.01)
            low = acked[0]
            infos.append((low, engine.snapshot("c"), acked[0]))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    base = {f"d{i}" for i in range(120)} - {f"d{i}" for i in range(100, 110)}
    for n, (low, info, high) in enumerate(infos):
        name = f"snap{n}"
        engine.restore(engine.snapshots.path("c", info.name), name)
        ids = set(engine.collection(name).document_ids()) - base
        j = len(ids) // 8
        # exactly the first j batches, whole, where j covers every write acknowledged before the
        # snapshot began and at most the one in flight when it ended
        assert ids == {d.id for b in batches[:j] for d in b}
        assert low <= j <= high + 1, (low, j, high)
        _, out = engine.search(name, [f"uniqw{1000 + 8 * (j - 1)}"], k=1)
        assert out.hits[0][0].document.text == batches[j - 1][0].text
    print(
        f"snapshots under writes: {[(low, len(engine.collection(f'snap{n}').document_ids()), high) for n, (low, _, high) in enumerate(infos)]}"
    )

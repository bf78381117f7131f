"""Collections: segments and tombstones give exactly the results of one fresh index over the
live documents; unchanged documents are not re-encoded; crashes and concurrent writers
leave exactly the expected documents."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from collection_data import make_docs, make_queries

from cascade.api.service.collection import SegmentedCollection
from cascade.api.service.config import CollectionConfig
from cascade.eval.presets import resolve_pipeline
from cascade.retrieval.errors import IndexMismatch, InvalidInput
from cascade.retrieval.sparse.bm25 import BM25Retriever
from cascade.retrieval.types import Document, Query

ROOT = Path(__file__).resolve().parents[3]
BM25 = resolve_pipeline("bm25")


def new_collection(path: Path, background: bool = False, max_segments: int = 100, max_tokens: int = 4096):
    config = CollectionConfig(
        name="c",
        pipeline=BM25,
        chunking={"max_tokens": max_tokens, "overlap": 0},
        compaction={"background": background, "max_segments": max_segments},
    )
    return SegmentedCollection.create(path, config)


def whole(docs):
    """The chunks a collection makes of documents that fit one chunk."""
    return [Document(f"{d.id}#0", d.text, d.title, d.metadata) for d in docs]


def assert_same_as_fresh_index(coll: SegmentedCollection, live: list[Document], queries: list[str], k: int = 10):
    ref = BM25Retriever.build(whole(live), show_progress=False)
    qs = [Query(str(i), q) for i, q in enumerate(queries)]
    got = coll.search(qs, k=k, with_documents=False).hits
    for hits, expected in zip(got, ref.search(qs, k=k), strict=True):
        assert [h.id for h in hits] == list(expected.doc_ids)
        assert [h.score for h in hits] == pytest.approx(list(expected.scores), rel=1e-5)
    assert coll.document_ids() == sorted(d.id for d in live)


def test_segments_and_tombstones_match_one_fresh_index(tmp_path, monkeypatch):
    coll = new_collection(tmp_path / "c")
    docs = make_docs(300)
    for i in range(0, 300, 100):
        assert coll.upsert(docs[i : i + 100]).added == 100
    builds = []
    # index sets build BM25 with the streaming build, straight into the segment's directory
    original = BM25Retriever.build_streaming.__func__
    monkeypatch.setattr(
        BM25Retriever,
        "build_streaming",
        classmethod(lambda cls, d, path, **kw: builds.append(d := list(d)) or original(cls, d, path, **kw)),
    )
    # unchanged documents: nothing re-encoded, no segment
    again = coll.upsert(docs[:50])
    assert (again.unchanged, again.segment, builds) == (50, None, [])
    # changed documents: only they are encoded, into a new segment
    changed = [Document(d.id, d.text + " gene gene", d.title, d.metadata) for d in docs[:20]]
    res = coll.upsert(changed + docs[20:30])
    assert (res.updated, res.unchanged, res.added) == (20, 10, 0)
    assert sorted(c.id for c in builds[0]) == sorted(f"{d.id}#0" for d in changed)
    assert coll.delete(ids=[d.id for d in docs[100:130]] + ["no-such-doc"]) == 30
    assert coll.delete(where={"group": 3}) == len(
        [d for d in docs if d.metadata["group"] == 3 and not 100 <= d.metadata["n"] < 130]
    )
    live = {d.id: d for d in docs}
    live.update({d.id: d for d in changed})
    live = [d for i, d in live.items() if not (100 <= d.metadata["n"] < 130) and d.metadata["group"] != 3]
    assert len(coll.info()["segments"]) == 4
    queries = make_queries(40) + ["gene", "uniqd5 stem"]
    assert_same_as_fresh_index(coll, live, queries)
    # compaction: one segment, the same results; a reopened collection too
    assert coll.compact(full=True)
    assert [s["chunks"] for s in coll.info()["segments"]] == [len(live)]
    assert_same_as_fresh_index(coll, live, queries)
    coll.close()
    assert sorted(p.name for p in (tmp_path / "c" / "segments").iterdir()) == ["00000005"]
    assert_same_as_fresh_index(SegmentedCollection.open(tmp_path / "c"), live, queries)


def test_filters_give_the_filtered_exact_top_k(tmp_path):
    coll = new_collection(tmp_path / "c")
    docs = make_docs(200)
    coll.upsert(docs[:120])
    coll.upsert(docs[120:])
    coll.delete(ids=[d.id for d in docs[:10]])
    live = docs[10:]
    ref = BM25Retriever.build(whole(live), show_progress=False)
    where = {"n": {"$lt": 150}, "group": {"$in": [0, 1]}}
    keep = {f"{d.id}#0" for d in live if d.metadata["n"] < 150 and d.metadata["group"] in (0, 1)}
    for q in make_queries(20):
        full = ref.search([Query("q", q)], k=1000)[0]
        expected = [d for d in full.doc_ids if d in keep][:7]
        got = coll.search([Query("q", q)], k=7, where=where).hits[0]
        assert [h.id for h in got] == expected
        assert all(h.document.metadata["group"] in (0, 1) for h in got)


def test_chunks_carry_offsets_into_their_document(tmp_path):
    coll = new_collection(tmp_path / "c", max_tokens=20)
    text = " ".join(f"Sentence {i} talks about stem cells and w{i}." for i in range(30))
    coll.upsert([Document("long", text, "Long doc")])
    hits = coll.search([Query("q", "stem cells")], k=50).hits[0]
    assert len(hits) > 5 and {h.doc_id for h in hits} == {"long"}
    for h in hits:
        m = h.document.metadata
        assert text[m["start"] : m["end"]] == h.document.text


def test_bad_input_changes_nothing(tmp_path):
    coll = new_collection(tmp_path / "c")
    coll.upsert(make_docs(5))
    before = coll.info()
    for bad, msg in [
        ([Document("a", "x"), Document("a", "y")], "duplicate document id"),
        ([Document("a", "x", metadata={"start": 1})], "reserved"),
        ([Document("b", "  ")], "has no text"),
    ]:
        with pytest.raises(InvalidInput, match=msg):
            coll.upsert(bad)
    with pytest.raises(InvalidInput, match="unknown operator"):
        coll.delete(where={"n": {"$bad": 1}})
    with pytest.raises(InvalidInput, match="empty filter"):
        coll.delete(where={})
    with pytest.raises(IndexMismatch, match="no lucene-bm25 index"):
        coll.search([Query("q", "x")], resolve_pipeline("bm25-lucene"))
    assert coll.info() == before


CRASH_SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
from collection_data import make_docs
from cascade.api.service import collection as C
from cascade.retrieval.types import Document
coll = C.SegmentedCollection.open({path!r})
C.HOOKS[{point!r}] = lambda: os._exit(17)
docs = make_docs(30, start=100)
changed = [Document(d.id, d.text + " virus", d.title, d.metadata) for d in make_docs(10)]
coll.upsert(docs + changed)
"""


@pytest.mark.parametrize("point", ["segment_written", "before_commit"])
def test_crash_during_ingest_leaves_the_collection_as_before(tmp_path, point):
    coll = new_collection(tmp_path / "c")
    docs = make_docs(60)
    coll.upsert(docs)
    queries = make_queries(10) + ["virus"]
    coll.close()
    script = CRASH_SCRIPT.format(root=str(ROOT / "tests"), path=str(tmp_path / "c"), point=point)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 17, p.stderr
    reopened = SegmentedCollection.open(tmp_path / "c")
    assert_same_as_fresh_index(reopened, docs, queries)
    assert [p.name for p in (tmp_path / "c" / "segments").iterdir()] == ["00000001"]
    # and it takes the next batch normally
    assert reopened.upsert(make_docs(5, start=500)).added == 5


def test_failed_build_removes_its_segment(tmp_path, monkeypatch):
    from cascade.api.service import collection as C

    coll = new_collection(tmp_path / "c")
    coll.upsert(make_docs(10))

    def boom():
        raise RuntimeError("disk full")

    monkeypatch.setitem(C.HOOKS, "before_commit", boom)
    with pytest.raises(RuntimeError):
        coll.upsert(make_docs(5, start=100))
    assert coll.document_ids() == sorted(d.id for d in make_docs(10))
    assert [p.name for p in (tmp_path / "c" / "segments").iterdir()] == ["00000001"]


def test_leased_snapshot_outlives_compaction(tmp_path):
    coll = new_collection(tmp_path / "c")
    coll.upsert(make_docs(20))
    coll.upsert(make_docs(20, start=20))
    with coll.lease() as snap:
        old = [v.segment.path for v in snap.views]
        assert coll.compact(full=True)
        assert all(p.exists() for p in old)  # a search still reading them keeps them
        assert snap.views[0].segment.docs.get("d0#0").id == "d0#0"
    assert not any(p.exists() for p in old)


def test_concurrent_upserts_deletes_and_searches(tmp_path):
    """Two writers interleave upserts and deletes while two readers search and background
    compaction merges segments: every search sees each document at most once, and at the end
    the collection holds exactly the expected documents."""
    coll = new_collection(tmp_path / "c", background=True, max_segments=3)
    coll.upsert(make_docs(40, prefix="base"))
    expected = {f"base{i}" for i in range(40)}
    ever = set(expected)
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(prefix: str, seed: int):
        try:
            for step in range(12):
                batch = make_docs(6, seed=seed + step, start=step * 6, prefix=prefix)
                with lock:
                    ever.update(d.id for d in batch)
                coll.upsert(batch)
                with lock:
                    expected.update(d.id for d in batch)
                if step % 2:  # delete half of the previous batch, and one base doc
                    gone = [f"{prefix}{(step - 1) * 6 + j}" for j in range(3)] + [f"base{seed % 40 + step}"]
                    coll.delete(ids=gone)
                    with lock:
                        expected.difference_update(gone)
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    def reader():
        queries = [Query(str(i), q) for i, q in enumerate(make_queries(8, seed=5))]
        try:
            while not stop.is_set():
                for hits in coll.search(queries, k=50).hits:
                    ids = [h.doc_id for h in hits]
                    assert len(ids) == len(set(ids)), "a document appeared twice in one result"
                    with lock:
                        assert set(ids) <= ever
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(p, s)) for p, s in (("x", 3), ("y", 11))]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[0]
    coll.compact(full=True)
    assert coll.document_ids() == sorted(expected)
    with coll.lease() as snap:
        live = [v.segment.parents[i] for v in snap.views for i in range(len(v.live)) if v.live[i]]
    assert sorted(live) == sorted(expected)  # each exactly once
    for doc_id in sorted(expected)[::7]:
        assert coll.search([Query("q", f"uniq{doc_id}")], k=3).hits[0][0].doc_id == doc_id
    coll.close()
    reopened = SegmentedCollection.open(tmp_path / "c")
    assert reopened.document_ids() == sorted(expected)

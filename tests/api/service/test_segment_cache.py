"""The segment's bounded cache of recently read chunks (``Segment.documents``): the same
documents as the docstore, read from SQLite once, bounded, and never stale across upserts."""

from collection_data import make_docs

from cascade.api.service import segment as segment_mod
from cascade.api.service.collection import SegmentedCollection
from cascade.api.service.config import CollectionConfig
from cascade.eval.presets import resolve_pipeline
from cascade.retrieval.types import Document, Query


def new_collection(path):
    config = CollectionConfig(name="c", pipeline=resolve_pipeline("bm25"), chunking={"max_tokens": 4096, "overlap": 0},
                              compaction={"background": False})  # fmt: skip
    return SegmentedCollection.create(path, config)


def test_cached_reads_match_the_docstore_and_stay_bounded(tmp_path, monkeypatch):
    coll = new_collection(tmp_path / "c")
    coll.upsert(make_docs(60))
    seg = coll._segments()[0]
    ids = [f"d{i}#0" for i in (5, 1, 9, 33)] + ["nope#0"]
    reads = []
    real = seg.docs.get_many
    monkeypatch.setattr(
        seg.docs, "get_many", lambda ids, missing_ok=False: reads.append(list(ids)) or real(ids, missing_ok)
    )
    first = seg.documents(ids)
    assert (
        first == real(ids[:4]) and len(first) == 4
    )  # the docstore's documents, in order, the unknown skipped
    assert seg.documents(ids[1:3]) == first[1:3] and reads == [ids]  # the second time from memory
    size = sum(len(d.text) + len(d.title) for d in first[:2])
    monkeypatch.setattr(segment_mod, "HOT_CHARS", size)
    seg.documents(["d40#0"])  # over the bound: the least recently read go first
    assert seg._hot_chars <= size and "d40#0" in seg._hot and "d5#0" not in seg._hot


def test_a_replaced_document_is_never_served_from_the_old_segment(tmp_path):
    coll = new_collection(tmp_path / "c")
    coll.upsert([Document("a", "alpha first version"), Document("b", "beta")])
    q = [Query("0", "alpha")]
    assert coll.search(q, k=1).hits[0][0].document.text == "alpha first version"  # now cached
    coll.upsert([Document("a", "alpha second version")])
    assert coll.search(q, k=1).hits[0][0].document.text == "alpha second version"

import pytest

from cascade.indexing.chunking import ChunkConfig, chunk_documents, chunk_text
from cascade.indexing.corpus import read_corpus, read_csv, read_folder, read_jsonl, read_msmarco_collection
from cascade.indexing.docstore import DocStore
from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.types import Document


def test_jsonl_reader_streams_and_reports_bad_lines(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"_id": 1, "title": "T", "text": "x", "metadata": {"y": 2}}\n\n{"_id": "2", "text": "z"\n')
    docs = read_jsonl(f)
    assert next(docs) == Document("1", "x", "T", {"y": 2})
    with pytest.raises(InvalidInput, match=r"c.jsonl:3: invalid JSON"):
        next(docs)
    with pytest.raises(NotFound):
        list(read_jsonl(tmp_path / "missing.jsonl"))


def test_csv_tsv_msmarco_and_folder_readers(tmp_path):
    (tmp_path / "c.csv").write_text('doc,body,lang\n7,"hello, world",en\n')
    assert list(read_csv(tmp_path / "c.csv", id_field="doc", text_field="body")) == [
        Document("7", "hello, world", "", {"lang": "en"})
    ]
    with pytest.raises(InvalidInput, match="no column"):
        list(read_csv(tmp_path / "c.csv"))
    (tmp_path / "collection.tsv").write_text("0\tfirst passage\n1\tsecond\n")
    assert [d.id for d in read_msmarco_collection(tmp_path / "collection.tsv")] == ["0", "1"]
    folder = tmp_path / "files"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("plain text")
    (folder / "sub" / "b.html").write_text("<html><title>Doc B</title><script>x=1</script><p>Body  here</p></html>")
    (folder / "skip.bin").write_text("no")
    docs = list(read_folder(folder))
    assert [(d.id, d.title, d.text) for d in docs] == [("a.txt", "", "plain text"), ("sub/b.html", "Doc B", "Body here")]
    assert [d.id for d in read_corpus(folder)] == ["a.txt", "sub/b.html"]


def test_chunking_respects_sentences_and_overlap():
    text = "One two three. Four five six seven. Eight nine. Ten eleven twelve thirteen fourteen fifteen sixteen. End."
    spans = [text[s:e] for s, e in chunk_text(text, ChunkConfig(max_tokens=6, overlap=2))]
    assert spans == ["One two three.", "Four five six seven. Eight nine.", "Ten eleven twelve thirteen fourteen fifteen", "sixteen. End."]
    spans = [text[s:e] for s, e in chunk_text(text, ChunkConfig(max_tokens=9, overlap=3))]
    # "Eight nine." (2 words <= overlap) opens the next window again; the 7-word sentence
    # is longer than the overlap, so "End." starts fresh
    assert spans == [
        "One two three. Four five six seven. Eight nine.",
        "Eight nine. Ten eleven twelve thirteen fourteen fifteen sixteen.",
        "End.",
    ]
    chunks = list(chunk_documents([Document("d", text)], ChunkConfig(max_tokens=6, overlap=2)))
    assert [c.id for c in chunks] == ["d#0", "d#1", "d#2", "d#3"]
    assert all(text[c.metadata["start"] : c.metadata["end"]] == c.text for c in chunks)
    with pytest.raises(InvalidInput, match=r"overlap \(4\) must be below max_tokens \(4\)"):
        ChunkConfig.parse({"max_tokens": 4, "overlap": 4})


def test_docstore_batches_are_atomic(tmp_path):
    store = DocStore(tmp_path / "d.sqlite")
    store.put_many([Document("a", "x", "t", {"k": 1}), Document("b", "y")])
    with pytest.raises(InvalidInput, match="duplicate"):
        store.put_many([Document("c", "new"), Document("a", "again")], replace=False)
    assert len(store) == 2 and "c" not in store  # the failed batch left nothing behind
    assert store.get_many(["b", "a"]) == [Document("b", "y"), Document("a", "x", "t", {"k": 1})]
    with pytest.raises(NotFound, match="'zz'"):
        store.get_many(["a", "zz"])
    assert [d.id for d in store.get_many(["a", "zz"], missing_ok=True)] == ["a"]
    assert store.delete_many(["a", "zz"]) == 1 and len(store) == 1

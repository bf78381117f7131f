import http.server
import io
import json
import threading
import zipfile

import pytest

from cascade.eval import datasets
from cascade.eval.datasets import load_dataset
from cascade.eval.evaluate import evaluate_pipeline
from cascade.eval.presets import resolve_pipeline
from cascade.retrieval.errors import InvalidInput, NotFound


def test_msmarco_layout_with_graded_trec_dl_qrels(tmp_path):
    root = tmp_path / "msmarco"
    root.mkdir()
    (root / "collection.tsv").write_text("0\tstem cells become neurons\n1\tneurons fire\n2\tthe heart pumps blood\n")
    (root / "queries.dl19.tsv").write_text("100\tstem cell neurons\n101\theart\n102\tunjudged query\n")
    (root / "qrels.dl19.txt").write_text("100 0 0 3\n100 0 1 1\n101 0 2 2\n")
    ds = load_dataset(root, "dl19")
    assert ds.layout == "msmarco" and ds.relevance_level == 2
    assert [q.id for q in ds.queries] == ["100", "101"]  # only judged queries are evaluated
    report, run = evaluate_pipeline(ds, resolve_pipeline("bm25"), ["recall@1", "ndcg@10"])
    assert run["100"].doc_ids[0] == "0"
    # doc 1 is judged 1, below the TREC DL cut-off of 2: recall@1 counts only doc 0 for q100
    assert report.metrics["recall@1"] == pytest.approx(1.0)


class _ZipHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


def test_beir_download_by_name_with_recorded_checksum(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("scifact/corpus.jsonl", json.dumps({"_id": "d1", "title": "", "text": "stem cells"}) + "\n")
        z.writestr("scifact/queries.jsonl", json.dumps({"_id": "q1", "text": "stem"}) + "\n")
        z.writestr("scifact/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    _ZipHandler.payload = buf.getvalue()
    server = http.server.HTTPServer(("127.0.0.1", 0), _ZipHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(datasets, "BEIR_URL", f"http://127.0.0.1:{server.server_port}/{{name}}.zip")
        ds = load_dataset("scifact")
        assert [q.id for q in ds.queries] == ["q1"] and next(ds.corpus()).id == "d1"
        root = datasets.cache_dir() / "datasets"
        assert len((root / "scifact.zip.sha256").read_text()) == 64
        assert load_dataset("scifact").root == root / "scifact"  # cached: no second download
    finally:
        server.shutdown()


def test_download_without_network_says_so(monkeypatch):
    monkeypatch.setattr(datasets, "BEIR_URL", "http://127.0.0.1:9/{name}.zip")  # nothing listens there
    with pytest.raises(NotFound, match="cannot download BEIR dataset 'nfcorpus'.*local dataset directory"):
        load_dataset("nfcorpus")
    with pytest.raises(NotFound, match="neither a directory nor a BEIR dataset name"):
        load_dataset("not-a-dataset")


def test_a_bad_queries_line_is_refused_with_file_and_line(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "stem cells"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "stem"}\n\n{"text": "no id"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(InvalidInput, match=r"queries\.jsonl:3: expected an object with '_id' and 'text'$"):
        load_dataset(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "stem"}\n')
    assert [q.id for q in load_dataset(tmp_path).queries] == ["q1"]

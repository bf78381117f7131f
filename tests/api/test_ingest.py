"""Request bodies to documents: a bad NDJSON line is refused with its line number."""

import pytest

from cascade.api.ingest import documents_from_upload, parse_json_documents, parse_ndjson
from cascade.retrieval.errors import InvalidInput


def test_ndjson_bodies_report_the_bad_line():
    body = b'{"_id": "a", "text": "x"}\r\n\r\n{"id": "b", "text": "y\xe2\x80\xa8z"}'  # U+2028 inside a string
    assert [(d.id, d.text) for d in parse_ndjson(body)] == [("a", "x"), ("b", "y\u2028z")]
    with pytest.raises(InvalidInput, match=r"^body:2: text: Field required$"):
        parse_ndjson(b'{"id": "a", "text": "x"}\n{"id": "b"}\n')
    with pytest.raises(InvalidInput, match=r"^body:3: invalid JSON"):
        parse_ndjson(b'{"id": "a", "text": "x"}\n\n{"id": \n')
    with pytest.raises(InvalidInput, match=r"^body:1: not UTF-8$"):
        parse_ndjson(b"\xff\n")
    with pytest.raises(InvalidInput, match=r"^up\.jsonl:1: id: Input should be a valid string$"):
        documents_from_upload("up.jsonl", b'{"id": 1, "text": "x"}\n')
    with pytest.raises(InvalidInput, match=r"^body: no documents$"):
        parse_ndjson(b"\n\n")
    with pytest.raises(InvalidInput, match=r"^body: documents\[1\]: text: Field required$"):
        parse_json_documents(b'[{"id": "a", "text": "x"}, {"id": "b"}]')

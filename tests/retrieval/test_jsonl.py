"""The one JSON-lines reader: values stream out, and every bad line is refused as SOURCE:LINE,
from a file or from lines in memory."""

import pytest

from cascade.retrieval.errors import InvalidInput, NotFound
from cascade.retrieval.jsonl import read_jsonl


def _number(value):
    if not isinstance(value, int):
        raise InvalidInput("expected a number")
    return value * 10


def test_values_from_a_file_and_from_lines(tmp_path):
    f = tmp_path / "v.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n  \n[2, 3]\n"x"\n')
    assert list(read_jsonl(f)) == [{"a": 1}, [2, 3], "x"]
    assert list(read_jsonl(str(f))) == [{"a": 1}, [2, 3], "x"]
    assert list(read_jsonl(["1", "", b"2\n"], "mem", _number)) == [10, 20]
    assert list(read_jsonl([], "empty")) == []


@pytest.mark.parametrize(
    "lines, message",
    [
        ([b"1", b"", b'{"a": '], r"^body:3: invalid JSON \(Expecting value\)$"),
        ([b"1", b"\xff\xfe"], r"^body:2: not UTF-8$"),
        (["1", "2", '"three"'], r"^body:3: expected a number$"),
    ],
)
def test_a_bad_line_is_refused_with_source_and_line(lines, message):
    values = read_jsonl(lines, "body", _number)
    assert next(values) == 10  # streamed: the lines before the bad one come out first
    with pytest.raises(InvalidInput, match=message):
        list(values)


def test_a_file_is_named_by_its_path_or_the_source_name(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text("1\n\n[]\n")
    with pytest.raises(InvalidInput, match=rf"^{f}:3: expected a number$"):
        list(read_jsonl(f, convert=_number))
    with pytest.raises(InvalidInput, match=r"^queries:3: expected a number$"):
        list(read_jsonl(f, "queries", _number))
    with pytest.raises(NotFound, match="missing.jsonl does not exist"):
        next(read_jsonl(tmp_path / "missing.jsonl"))

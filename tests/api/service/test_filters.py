"""The metadata filter language: semantics on small cases and one-line refusals."""

import pytest

from cascade.api.service.filters import compile_filter
from cascade.retrieval.errors import InvalidInput

ROWS = [
    {"id": 1, "year": 2019, "lang": "en", "draft": False},
    {"id": 2, "year": 2021, "lang": "de", "draft": True},
    {"id": 3, "year": 2023, "lang": "en"},
    {"id": 4, "year": "2024", "lang": "fr"},  # a string year never satisfies a range
    {"id": 5, "lang": "en", "draft": 1},
]


def ids(spec):
    match = compile_filter(spec)
    return [r["id"] for r in ROWS if match(r)]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"lang": "en"}, [1, 3, 5]),
        ({"lang": {"$ne": "en"}}, [2, 4]),
        ({"lang": {"$in": ["de", "fr"]}}, [2, 4]),
        ({"lang": {"$nin": ["de", "fr"]}}, [1, 3, 5]),
        ({"year": {"$gt": 2019}}, [2, 3]),
        ({"year": {"$gte": 2019, "$lt": 2023}}, [1, 2]),
        ({"year": {"$lte": 2021.5}}, [1, 2]),
        ({"draft": True}, [2]),  # 1 is not True
        ({"draft": {"$ne": True}}, [1, 3, 4, 5]),  # missing fields match $ne
        ({"lang": "en", "year": {"$gt": 2000}}, [1, 3]),
        ({"$or": [{"lang": "de"}, {"year": {"$gte": 2023}}]}, [2, 3]),
        ({"$and": [{"lang": "en"}, {"$or": [{"draft": False}, {"year": 2023}]}]}, [1, 3]),
    ],
)
def test_semantics(spec, expected):
    assert ids(spec) == expected


def test_no_filter():
    assert compile_filter(None) is None and compile_filter({}) is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ([1, 2], "expected an object"),
        ({"year": {"$foo": 1}}, "unknown operator '$foo'"),
        ({"$nor": []}, "unknown operator '$nor'"),
        ({"year": {"$gt": "2020"}}, "expected a finite number"),
        ({"year": {"$gt": True}}, "expected a finite number"),
        ({"lang": {"$in": "en"}}, "expected a list"),
        ({"lang": {"$in": list(range(1001))}}, "at most 1000"),
        ({"lang": {"x": 1}}, "unknown operator 'x'"),
        ({"lang": {}}, "empty operator object"),
        ({"lang": [1]}, "expected a string, number"),
        ({"$or": []}, "non-empty list"),
        ({"$and": [{"a": 1}, 3]}, "expected an object"),
    ],
)
def test_malformed(spec, message):
    with pytest.raises(InvalidInput, match=message.replace("$", r"\$").replace("[", r"\[")):
        compile_filter(spec)


def test_too_deep():
    spec = {"a": 1}
    for _ in range(10):
        spec = {"$and": [spec]}
    with pytest.raises(InvalidInput, match="deeper"):
        compile_filter(spec)

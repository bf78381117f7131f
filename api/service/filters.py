"""Metadata filters: a small, validated subset of MongoDB's query language.

Grammar (a filter is a JSON object; its clauses must all hold)::

    filter   := { clause, ... }                      (an empty object matches everything)
    clause   := FIELD: SCALAR                        equality
              | FIELD: { OP: VALUE, ... }            every operator must hold
              | "$and": [filter, ...] | "$or": [filter, ...]
    OP       := $eq | $ne (SCALAR) | $in | $nin (list of SCALAR, at most 1,000)
              | $gt | $gte | $lt | $lte (a number)
    SCALAR   := string | number | boolean | null

``FIELD`` names a key of the document's metadata (chunks also carry ``parent_id``,
``start`` and ``end``). A field that is missing matches only ``$ne`` / ``$nin``. Range
operators compare numbers only: a string or boolean value never satisfies ``$gt`` (so a
filter never silently compares ``"10" < "9"``). Anything else is refused with
:class:`InvalidInput` naming the offending part, before any data is touched.

Example:
    >>> match = compile_filter({"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}})
    >>> match({"year": 2021, "lang": "en"}), match({"year": 2019, "lang": "en"})
    (True, False)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from cascade.retrieval.errors import InvalidInput

Predicate = Callable[[Mapping[str, Any]], bool]

MAX_IN = 1000
MAX_DEPTH = 8
_MISSING = object()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | bool) or _is_number(v)


def _eq(a: Any, b: Any) -> bool:
    # True == 1 in Python; metadata equality must not confuse booleans with numbers
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _scalar(where: str, v: Any) -> Any:
    if not _is_scalar(v):
        raise InvalidInput(
            f"filter {where}: expected a string, number, boolean or null, got {type(v).__name__}"
        )
    return v


def _scalars(where: str, v: Any) -> list:
    if not isinstance(v, list):
        raise InvalidInput(f"filter {where}: expected a list, got {type(v).__name__}")
    if len(v) > MAX_IN:
        raise InvalidInput(f"filter {where}: at most {MAX_IN} values, got {len(v)}")
    return [_scalar(where, x) for x in v]


def _number(where: str, v: Any) -> float:
    if not _is_number(v):
        raise InvalidInput(f"filter {where}: expected a finite number, got {v!r}")
    return v


_RANGE = {
    "$gt": lambda x, n: x > n,
    "$gte": lambda x, n: x >= n,
    "$lt": lambda x, n: x < n,
    "$lte": lambda x, n: x <= n,
}


def _operator(field: str, op: str, arg: Any) -> Callable[[Any], bool]:
    where = f"{field}.{op}"
    if op == "$eq":
        v = _scalar(where, arg)
        return lambda x: x is not _MISSING and _eq(x, v)
    if op == "$ne":
        v = _scalar(where, arg)
        return lambda x: x is _MISSING or not _eq(x, v)
    if op in ("$in", "$nin"):
        vs = _scalars(where, arg)
        hit = lambda x: x is not _MISSING and any(_eq(x, v) for v in vs)  # noqa: E731
        return hit if op == "$in" else (lambda x: not hit(x))
    if op in _RANGE:
        n, cmp = _number(where, arg), _RANGE[op]
        return lambda x: _is_number(x) and cmp(x, n)
    raise InvalidInput(
        f"filter {field}: unknown operator {op!r}; valid: $eq, $ne, $in, $nin, $gt, $gte, $lt, $lte"
    )


def _field(field: str, cond: Any) -> Predicate:
    if not field or field.startswith("$"):
        raise InvalidInput(f"filter: unknown operator {field!r} at the top level; valid: $and, $or")
    if isinstance(cond, dict):
        if not cond:
            raise InvalidInput(f"filter {field}: empty operator object")
        tests = [_operator(field, op, arg) for op, arg in cond.items()]
    else:
        tests = [_operator(field, "$eq", cond)]

    def match(meta: Mapping[str, Any]) -> bool:
        x = meta.get(field, _MISSING)
        return all(t(x) for t in tests)

    return match


def _compile(spec: Any, depth: int) -> Predicate:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"filter: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, dict):
        raise InvalidInput(f"filter: expected an object, got {type(spec).__name__}")
    parts: list[Predicate] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidInput(f"filter {key}: expected a non-empty list of filters")
            subs = [_compile(s, depth + 1) for s in value]
            combine = all if key == "$and" else any
            parts.append(lambda m, subs=subs, combine=combine: combine(s(m) for s in subs))
        else:
            parts.append(_field(key, value))
    return lambda meta: all(p(meta) for p in parts)


def compile_filter(spec: Mapping[str, Any] | None) -> Predicate | None:
    """Validate a filter and turn it into a predicate over a metadata mapping.

    Args:
        spec: the filter object; ``None`` or ``{}`` means no filter.

    Returns:
        The predicate, or ``None`` when nothing is filtered.

    Raises:
        InvalidInput: the filter is malformed (the message names the part and why).
    """
    if spec is None or (isinstance(spec, dict) and not spec):
        return None
    return _compile(spec, 0)

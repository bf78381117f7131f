"""The one JSON-lines reader: corpus files, query files, benchmark inputs and API bodies all
go through :func:`read_jsonl`, so a bad line is reported the same way everywhere, as
``SOURCE:LINE: reason``.

It lives in the bottom layer so that every layer can use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .errors import InvalidInput, NotFound

T = TypeVar("T")


def read_jsonl(
    path_or_lines: str | os.PathLike[str] | Iterable[str | bytes],
    source_name: str | None = None,
    convert: Callable[[Any], T] | None = None,
    first_line: int = 1,
) -> Iterator[T]:
    """The parsed value of each non-blank line, streamed one at a time.

    Args:
        path_or_lines: a file path (``str`` or path-like), or the lines themselves (``str``
            or UTF-8 ``bytes`` each, e.g. ``body.splitlines()``).
        source_name: names the input in errors; default: the path, or ``"input"`` for lines.
        convert: turns each parsed value into what the caller wants; an :class:`InvalidInput`
            it raises (its message a bare reason) is reported with the source and line.
        first_line: the line number of the first of ``lines`` in their source (a slice of a
            file read elsewhere).

    Raises:
        NotFound: (on the first ``next``) the file does not exist.
        InvalidInput: ``SOURCE:LINE: reason`` for a line that is not UTF-8, not JSON, or
            refused by ``convert``.
    """
    if isinstance(path_or_lines, (str, os.PathLike)):
        path = Path(path_or_lines)
        return _read_file(path, source_name or str(path), convert)
    return _read_lines(path_or_lines, source_name or "input", convert, first_line)


def _read_file(path: Path, source: str, convert: Callable[[Any], T] | None) -> Iterator[T]:
    if not path.is_file():
        raise NotFound(f"{path} does not exist")
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is reported with its number
        yield from _read_lines(f, source, convert)


def _read_lines(
    lines: Iterable[str | bytes], source: str, convert: Callable[[Any], T] | None, first_line: int = 1
) -> Iterator[T]:
    for lineno, line in enumerate(lines, start=first_line):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"{source}:{lineno}: not UTF-8") from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{source}:{lineno}: invalid JSON ({e.msg})") from None
        if convert is None:
            yield value
            continue
        try:
            converted = convert(value)
        except InvalidInput as e:
            raise InvalidInput(f"{source}:{lineno}: {e}") from None
        yield converted

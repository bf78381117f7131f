"""A ``--json`` command's standard output: one JSON object, nothing else.

The state lives here, in one module, so every command module (``cli``, ``server``) writes its
object through the same stream, also when ``cli`` runs as ``__main__``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: While a ``--json`` command runs: the real standard output, kept for the one JSON object.
_json_out = None


def print_json(obj) -> None:
    """Write a command's one ``--json`` object: to the real stdout, even while it points elsewhere."""
    out = _json_out or sys.stdout
    out.write(json.dumps(obj) + "\n")
    out.flush()


@contextmanager
def json_only_stdout() -> Iterator[None]:
    """Send everything but the final JSON object to stderr, down to the file descriptor.

    Java (Anserini), numba, Ray and other libraries write to fd 1 directly, bypassing
    ``sys.stdout``; a script reading ``--json`` output must still get one JSON object.
    The JSON goes to a duplicate of the real fd 1, or to ``sys.stdout`` itself when that is
    not fd 1 (a test's capture).
    """
    global _json_out
    real = sys.stdout
    real.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 at all
        saved = None
    try:
        on_fd1 = real.fileno() == 1
    except (AttributeError, OSError, ValueError):
        on_fd1 = False
    if saved is not None:
        os.dup2(2, 1)  # fd level: what Java or numba write to fd 1 lands on fd 2
    _json_out = os.fdopen(os.dup(saved), "w", encoding="utf-8") if on_fd1 and saved is not None else real
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = real
        sys.stderr.flush()
        if _json_out is not real:
            _json_out.close()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
        _json_out = None

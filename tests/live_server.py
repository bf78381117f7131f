"""``cascade serve`` as a real process on loopback, for the tests that drive it with real clients."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def cascade_process(
    args: list[str], log: Path, ready: Callable[[], bool], timeout: float = 120, **popen: Any
) -> Iterator[subprocess.Popen]:
    """Run ``python -m cascade ARGS...`` (stderr to ``log``) until ``ready()`` holds, yield the
    process, and stop it on exit; a process that exits or misses ``timeout`` fails with its log."""
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cascade", *args], stdout=subprocess.DEVNULL, stderr=err,
                                **popen)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cascade {args[0]} did not start: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def cascade_serve(data_dir: Path, *args: str, timeout: float = 120) -> Iterator[str]:
    """Start ``python -m cascade serve --data-dir DATA_DIR --port P ARGS...`` on 127.0.0.1 and
    yield its base URL once ``/readyz`` answers; the process is stopped on exit.

    Its stderr goes to ``DATA_DIR/serve.log`` (read back into the error when it fails to start).
    """
    with cascade_serve_process(data_dir, *args, timeout=timeout) as (url, _):
        yield url


@contextlib.contextmanager
def cascade_serve_process(
    data_dir: Path, *args: str, timeout: float = 120, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """:func:`cascade_serve`, yielding the process too (for tests that kill it); ``log``:
    where its stderr goes instead of ``DATA_DIR/serve.log``."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    args = ("serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), *args)
    with cascade_process(list(args), log or data_dir / "serve.log", ready, timeout) as proc:
        yield url, proc

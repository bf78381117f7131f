"""One writer per data directory: an OS file lock that a second `cascade serve` or `cascade
collection` on the same ``--data-dir`` meets at start.

The lock is ``fcntl.flock`` on ``DATA_DIR/.cascade.lock``: the kernel drops it when the holding
process exits for any reason (SIGKILL included), so a crash never leaves a stale lock behind.
The holder writes its pid into the file, which is what the refusal names. Read-only index
directories served with ``--index`` are not locked: any number of processes may read them.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cascade.retrieval.errors import Conflict

LOCK_FILE = ".cascade.lock"


class DataDirLock:
    """Holds the data directory's lock from construction until :meth:`release`.

    Raises:
        Conflict: another process holds it (the message names its pid).
    """

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise Conflict(
                f"data directory {self.path.parent} is in use by {who} (a `cascade serve` or "
                "`cascade collection`); stop it first or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Let the next process in (idempotent). The pid is left in the file: a reader only
        trusts it while the lock is held."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None

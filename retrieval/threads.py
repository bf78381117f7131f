"""CPU threads for the libraries that run the project's kernels: torch (encoders, rerankers,
PLAID), numba (the compiled kernels of :mod:`retrieval.compiled`) and faiss. ``cascade eval``,
``index`` and ``serve`` take ``--threads N`` and hand it to :func:`set_threads`, so a user sharing
a machine (or a container with a CPU quota) can keep a run to its share.

Each library is set only when it is installed; one that is not is left out of the answer.
numba and faiss keep a count per thread: a thread started afterwards (the server's workers) takes
it with :func:`use_in_this_thread`.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from cascade.retrieval.errors import InvalidInput

log = logging.getLogger(__name__)

# numba and faiss (OpenMP) keep their thread count per OS thread: a thread started later begins
# at the library's default (all cores), not at what the main thread set. Kept here so worker
# threads can take it (use_in_this_thread); torch hands its own count to new threads itself.
_per_thread: dict[str, int] = {}


def default_threads() -> int:
    """The cores this process may run on: its CPU affinity where the OS tells it (a container or
    ``taskset`` may allow fewer than the machine has), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_threads(value: int | str | None) -> int:
    """``value`` as a thread count: ``None`` is :func:`default_threads`, else a whole number >= 1.

    Raises:
        InvalidInput: 0, a negative number or anything not a whole number, in one line.
    """
    if value is None:
        return default_threads()
    n = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        n = int(value)
    if n is None or n < 1:
        raise InvalidInput(f"threads must be a whole number of at least 1, got {value!r}")
    return n


#: environment variables a library reads when it is first loaded: set before its import, they
#: size it without importing it now (torch alone takes seconds to import)
_ENV = {"torch": ("OMP_NUM_THREADS", "MKL_NUM_THREADS"), "faiss": ("OMP_NUM_THREADS",),
        "numba": ("NUMBA_NUM_THREADS",)}  # fmt: skip


def library_threads() -> dict[str, int]:
    """The thread counts of the libraries loaded in this process, read back from each: e.g.
    ``{"torch": 4, "torch_interop": 4, "numba": 4, "faiss": 4}``; a library not loaded (never
    used by this run) is left out."""
    got: dict[str, int] = {}
    if (torch := sys.modules.get("torch")) is not None:
        got["torch"], got["torch_interop"] = torch.get_num_threads(), torch.get_num_interop_threads()
    if (numba := sys.modules.get("numba")) is not None:
        got["numba"] = numba.get_num_threads()
    if (faiss := sys.modules.get("faiss")) is not None:
        got["faiss"] = faiss.omp_get_max_threads()
    return got


def set_threads(n: int | str | None = None) -> dict[str, int]:
    """Run torch, numba and faiss on ``n`` threads (``None``: :func:`default_threads`).

    A library already loaded is set through its own call; one not loaded yet gets the
    environment variable it reads when it loads (``OMP_NUM_THREADS``, ``NUMBA_NUM_THREADS``),
    so a run that never needs torch does not pay for importing it. torch's inter-op pool is
    sized too when nothing has used it yet (torch allows it once); numba cannot go above the
    count it started with, so a larger ``n`` is capped there, with a log line.

    Returns:
        :func:`library_threads` afterwards (the libraries loaded so far).

    Raises:
        InvalidInput: a bad ``n`` (see :func:`resolve_threads`).
    """
    explicit = n is not None
    n = resolve_threads(n)
    for name, names in _ENV.items():
        if name not in sys.modules:
            for var in names:
                os.environ[var] = str(n)
    if (torch := sys.modules.get("torch")) is not None:
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # the pool already ran work, or was sized before: it stays
            pass
    if (numba := sys.modules.get("numba")) is not None:
        most = numba.config.NUMBA_NUM_THREADS
        if n > most:
            (log.warning if explicit else log.info)(
                "numba started with at most %d threads (NUMBA_NUM_THREADS); it runs on %d, not %d", most, most, n
            )
        _per_thread["numba"] = min(n, most)
        numba.set_num_threads(_per_thread["numba"])
    if (faiss := sys.modules.get("faiss")) is not None:
        _per_thread["faiss"] = n
        faiss.omp_set_num_threads(n)
    got = library_threads()
    log.info("threads: %d (%s)", n, ", ".join(f"{k} {v}" for k, v in got.items()) or "set for each library as it loads")
    return got


def use_in_this_thread() -> None:
    """Give the calling (worker) thread the numba and faiss counts of :func:`set_threads` (each
    thread has its own; torch's is process-wide). Cheap; does nothing before :func:`set_threads`."""
    if "numba" in _per_thread:
        numba = sys.modules["numba"]
        if numba.get_num_threads() != _per_thread["numba"]:
            numba.set_num_threads(_per_thread["numba"])
    if "faiss" in _per_thread:
        faiss = sys.modules["faiss"]
        if faiss.omp_get_max_threads() != _per_thread["faiss"]:
            faiss.omp_set_num_threads(_per_thread["faiss"])

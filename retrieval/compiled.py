"""numba when it is installed (extra ``fast``), plain Python otherwise: the decorators every
compiled kernel of the project (impact, Seismic, PLAID, WordPiece) is written with.

Without numba each decorator is the identity, so a kernel still runs, as slow Python;
callers that need the speed check :data:`AVAILABLE` first.
"""

from __future__ import annotations

try:
    import numba
except ImportError:  # pragma: no cover - the CI installs numba; kept working without it
    numba = None

AVAILABLE = numba is not None

if numba is not None:
    jit = numba.njit(cache=True, nogil=True)
    inline = numba.njit(cache=True, nogil=True, inline="always")
    parallel = numba.njit(cache=True, nogil=True, parallel=True)
    prange = numba.prange
else:  # pragma: no cover

    def jit(f):
        return f

    inline = parallel = jit
    prange = range

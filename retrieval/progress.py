"""Progress bars for long work: shown on a terminal, silent when stderr is a pipe or a
log file (so a failing CLI run prints its one error line and nothing else).

Every bar in the library comes from :func:`progress`, so they all show items/s, refresh at
the same rate and go quiet the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress(
    items: Iterable[Any] | None = None,
    desc: str = "",
    unit: str = "doc",
    enabled: bool = True,
    total: int | None = None,
    **kw,
) -> tqdm:
    """A bar with items/s: iterate it to wrap ``items``, or advance it by hand.

    Args:
        items: what to iterate over; ``None`` for a bar advanced with ``bar.update(n)``.
        desc: the label in front of the bar.
        unit: what one item is (``doc``, ``pair``, ``iter``...).
        enabled: ``False`` forces the bar off; ``True`` still shows it only on a terminal.
        total: the number of items, for a bar advanced by hand (``None``: a counter with no end).
        kw: passed on to ``tqdm`` (e.g. ``leave=False``).

    Returns:
        The bar; it is also a context manager that closes it.

    Example:
        >>> with progress(desc="encode", unit="doc", total=3, enabled=False) as bar:
        ...     bar.update(3)
        >>> [x for x in progress(range(3), "count", unit="iter")]
        [0, 1, 2]
    """
    kw.setdefault("mininterval", 1)
    return tqdm(items, desc=desc, unit=unit, total=total, disable=None if enabled else True, **kw)

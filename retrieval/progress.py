"""Progress bars for long work: shown on a terminal, silent when stderr is a pipe or a
log file (so a failing CLI run prints its one error line and nothing else)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str = "doc", enabled: bool = True, **kw) -> Iterable[T]:
    """Wrap ``items`` in a bar with items/s; ``enabled=False`` forces it off."""
    return tqdm(items, desc=desc, unit=unit, disable=None if enabled else True, mininterval=1, **kw)

"""A real Chromium for the console tests, driven by Playwright over the system's browser
(Debian's ``chromium`` package: Playwright's own browser download is not used)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """``$CASCADE_CHROMIUM``, else the first Chromium on PATH."""
    given = os.environ.get("CASCADE_CHROMIUM")
    if given:
        return given if os.path.isfile(given) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@contextlib.contextmanager
def launch() -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``); skips the test, saying why, without one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need the playwright package (pip install playwright; in the test extra)")
    path = chromium_path()
    if path is None:
        pytest.skip("browser tests need a Chromium: apt-get install chromium (or set CASCADE_CHROMIUM)")
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


class PageErrors:
    """Console errors and uncaught exceptions of a page; ``allowed``: substrings of expected ones."""

    def __init__(self, page, allowed: tuple[str, ...] = ()):
        self.messages: list[str] = []
        self.allowed = allowed
        page.on("console", lambda m: m.type == "error" and self.messages.append(m.text))
        page.on("pageerror", lambda e: self.messages.append(f"uncaught: {e}"))

    def unexpected(self) -> list[str]:
        return [m for m in self.messages if not any(a in m for a in self.allowed)]

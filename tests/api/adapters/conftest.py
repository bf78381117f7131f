"""The server for the adapter tests: a `cascade serve` process with collection `kb` and
reranker `tiny-ce`, one per test module."""

import pytest
from client_server import live_cascade


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with live_cascade(tmp_path_factory.mktemp("adapter")) as u:
        yield u

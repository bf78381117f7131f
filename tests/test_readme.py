"""The command blocks of the README's service section run verbatim against a real server.

A block preceded by a ``<!-- readme-test: service NAME -->`` line runs: all of them in README
order, in one temporary working directory (so a file one block writes, like ``docs.jsonl``,
is there for the next), against one ``cascade serve`` on loopback started by
:func:`live_server.cascade_serve`. The only change to a block's text is the port (``:8000``
becomes the test's). Bash blocks run under ``bash -e``, Python blocks under this interpreter;
each must exit 0 and print only JSON, whose shape is checked per block (``CHECKS``).

Command blocks of the section left unmarked, and why:

- the first one (``cascade collection create kb ... --corpus ../shared/datasets/scifact`` and
  ``cascade serve --data-dir data --port 8000 [...]``): the test runs that same ``cascade
  serve`` itself (on a free port, through ``cascade_serve``), its bracketed options are
  placeholders, and building a collection over SciFact takes minutes;
- the load test (``python -m cascade.eval.benchmarks.load ...``) is inline text, not a block: a
  multi-minute benchmark over SciFact.

Multi-machine Ray, GPU runs and ``pip install`` lines live in other sections, which this test
does not read.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from live_server import cascade_serve

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## The service (REST API and RAG backend)"
MARK = re.compile(r"^<!-- readme-test: service (\S+) -->$")
FENCE = re.compile(r"^```(\w*)$")
#: first lines of the section's unmarked command blocks (see the module docstring)
UNMARKED = ("# optional: a collection over a whole corpus, built before serving (SciFact: a few minutes)",)


@dataclass
class Block:
    name: str | None
    lang: str
    code: str


def section_blocks(text: str) -> list[Block]:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    lines = text[start : end if end >= 0 else len(text)].splitlines()
    blocks, name, i = [], None, 0
    while i < len(lines):
        mark = MARK.match(lines[i])
        fence = FENCE.match(lines[i])
        if mark:
            name = mark.group(1)
        elif fence:
            j = i + 1
            while lines[j] != "```":
                j += 1
            blocks.append(Block(name, fence.group(1), "\n".join(lines[i + 1 : j]) + "\n"))
            name, i = None, j
        elif lines[i].strip():
            name = None  # a marker belongs to the block right after it
        i += 1
    return blocks


def json_values(out: str) -> list:
    """Every JSON value printed, one after another (curl prints bodies without newlines)."""
    dec, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(out) and out[i].isspace():
            i += 1
        if i == len(out):
            return values
        value, i = dec.raw_decode(out, i)
        values.append(value)


def ok(value: dict) -> dict:
    assert isinstance(value, dict) and "error" not in value, value
    return value


def hit_ids(result: dict) -> list[str]:
    return [h["doc_id"] for h in ok(result)["results"][0]["hits"]]


def check_quickstart(out: list) -> None:
    created, ingested, one, found = out
    assert ok(created)["name"] == "notes"
    assert (ok(ingested)["added"], ok(one)["added"]) == (4, 1)
    ids = hit_ids(found)
    assert ids and set(ids) <= {"d1", "d3", "d4", "d5"} and ids[0] in ("d1", "d5")  # year >= 2020


def check_hybrid(out: list) -> None:
    created, ingested, fused, reranked = out
    assert ok(created)["name"] == "hybrid-notes" and ok(ingested)["added"] == 4
    assert ok(fused)["pipeline"] == "prefetch" and 0 < len(hit_ids(fused)) <= 3
    assert {"retrieve:bm25", "retrieve:dense", "fuse:rrf"} <= set(fused["timings_ms"])
    hits = ok(reranked)["results"][0]["hits"]
    assert len(hits) == 3 and all("metadata" in h for h in hits)
    assert {"fuse:dbsf", "rerank:colbert"} <= set(reranked["timings_ms"])


def check_python(out: list) -> None:
    assert 0 < len(out) <= 3
    assert all(set(h) == {"doc_id", "score", "title"} and h["doc_id"] in {"d1", "d2", "d3", "d4"} for h in out)


CHECKS = {"quickstart": check_quickstart, "hybrid": check_hybrid, "python": check_python}


def test_blocks_are_marked_or_listed():
    blocks = section_blocks(README.read_text())
    assert [b.name for b in blocks if b.name] == list(CHECKS)
    assert all(b.lang in ("bash", "python") for b in blocks if b.name)
    unmarked = [b.code.splitlines()[0] for b in blocks if not b.name and b.lang in ("bash", "sh", "python", "")]
    assert unmarked == list(UNMARKED), "an unmarked command block: mark it, or list it in UNMARKED and say why"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl")
def test_service_section_runs_verbatim(tmp_path):
    blocks = [b for b in section_blocks(README.read_text()) if b.name]
    work = tmp_path / "work"
    work.mkdir()
    with cascade_serve(tmp_path / "data") as url:
        port = urlparse(url).port
        for block in blocks:
            code = block.code.replace(":8000", f":{port}")
            cmd = ["bash", "-e", "-c", code] if block.lang == "bash" else [sys.executable, "-c", code]
            p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, f"{block.name}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
            try:
                values = json_values(p.stdout)
            except json.JSONDecodeError as e:
                raise AssertionError(f"{block.name}: printed something not JSON ({e}):\n{p.stdout[-2000:]}") from None
            CHECKS[block.name](values)
        # the quickstart's documents: extra fields became metadata, merged with the explicit object
        d4 = httpx.get(f"{url}/v1/collections/notes/documents/d4").json()
        assert d4["metadata"] == {"year": 2020, "lang": "en"}

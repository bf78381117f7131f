"""``cascade bench soak``: many clients mixing search, ingest, upsert and delete on one
collection for a set time, over loopback only; then the invariants a long-running service owes.

It starts ``cascade serve`` as a child process on 127.0.0.1 (or uses ``url``, which must be
loopback), creates collection ``collection`` (dropped first if it exists) with the first
``base_docs`` documents of the dataset's corpus, and runs ``clients`` clients for ``seconds``.
Each client owns its own document ids, so what the collection must hold at the end is known
exactly from the writes the server acknowledged (a 2xx answer): every live id with the
SHA-256 of its text, none of the deleted ones. A client keeps its own documents near
``docs_per_client`` (ingesting below half of it, deleting above 1.5x), so the collection's
size, and the memory it rightly needs, stays level (each client starts with that many).

At the end, checked (``ours["pass"]``):

- the error count is 0 (any non-2xx answer or transport error);
- the collection holds exactly the expected documents: the document count, each live id's
  stored ``sha256`` (its metadata), each deleted id gone (404), and each live document found
  by a search for its version's unique token with the acknowledged text (its hash);
- the server's resident memory (``/proc/PID/status``, sampled every ``sample_s``) at the end
  is less than 10% over its level at the end of the warm-up (``warmup`` seconds, default a
  fifth of the run). Without a child process (``url``) there is no PID to sample: pass ``pid``.

``ratio``: 0 when an invariant fails, else (1 + allowed growth) / (1 + measured growth): over 1
means memory stayed within its budget. ``plot=FILE.png``: latency and memory over time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cascade.eval.benchmarks.load import (
    _check_loopback,
    _free_port,
    _percentiles,
    _query_text,
    start_server,
    wait_ready,
)
from cascade.retrieval.errors import InvalidInput, NotFound, require
from cascade.retrieval.jsonl import read_jsonl

log = logging.getLogger("cascade.soak")

MAX_RSS_GROWTH = 0.10


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` (Linux ``/proc``), None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class _Client:
    """One client's view: its acknowledged documents (id -> text hash), the ids it deleted,
    and the ids whose last write got no acknowledgement (their state is unknown)."""

    index: int
    rng: random.Random
    live: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)
    tokens: dict[str, str] = field(default_factory=dict)  # id -> its current version's unique token
    next_id: int = 0
    version: int = 0

    def new_text(self, pool: list[str]) -> tuple[str, str]:
        self.version += 1
        token = f"soakc{self.index}v{self.version}"
        return f"{self.rng.choice(pool)} {token}", token


def _body(doc_id: str, text: str) -> dict:
    return {"id": doc_id, "text": text, "metadata": {"sha256": sha(text)}}


async def _client_loop(httpx, client, name: str, c: _Client, pool: list[str], queries: list[str],
                       deadline: float, t0: float, events: list, errors: dict, target: int,
                       batch: int, search_share: float, k: int) -> None:  # fmt: skip
    def count_error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    while time.monotonic() < deadline:
        ids = list(c.live)
        if c.rng.random() < search_share:
            op = "search"
        elif len(ids) < target // 2:
            op = "ingest"
        elif len(ids) > target * 3 // 2:
            op = "delete"
        else:
            op = c.rng.choice(("ingest", "upsert", "delete"))
        if op in ("upsert", "delete") and not ids:
            op = "ingest"
        touched: dict[str, tuple[str, str] | None] = {}  # id -> (text, token), None = deleted
        if op == "search":
            req = ("POST", "/v1/search", {"collection": name, "query": c.rng.choice(queries), "k": k})
        elif op == "ingest":
            for _ in range(batch):
                doc_id = f"soak-{c.index}-{c.next_id}"
                c.next_id += 1
                touched[doc_id] = c.new_text(pool)
            docs = [_body(i, t) for i, (t, _) in touched.items()]
            req = ("POST", f"/v1/collections/{name}/documents", {"documents": docs})
        elif op == "upsert":
            for doc_id in c.rng.sample(ids, min(batch, len(ids))):
                touched[doc_id] = c.new_text(pool)
            docs = [_body(i, t) for i, (t, _) in touched.items()]
            req = ("POST", f"/v1/collections/{name}/documents", {"documents": docs})
        else:
            gone = c.rng.sample(ids, min(max(1, batch // 2), len(ids)))
            touched = dict.fromkeys(gone)
            if len(gone) == 1 and c.rng.random() < 0.5:  # both delete routes
                req = ("DELETE", f"/v1/collections/{name}/documents/{gone[0]}", None)
            else:
                req = ("POST", f"/v1/collections/{name}/delete", {"ids": gone})
        t = time.perf_counter()
        try:
            r = await client.request(req[0], req[1], json=req[2])
        except httpx.HTTPError as e:
            count_error(type(e).__name__)
            c.uncertain.update(touched)
            continue
        events.append((time.perf_counter() - t0, op, time.perf_counter() - t))
        if r.status_code // 100 != 2:
            count_error(str(r.status_code))
            c.uncertain.update(touched)
            continue
        for doc_id, new in touched.items():  # acknowledged: now known exactly
            c.uncertain.discard(doc_id)
            if new is None:
                c.live.pop(doc_id, None)
                c.tokens.pop(doc_id, None)
                c.deleted.add(doc_id)
            else:
                c.live[doc_id], c.tokens[doc_id] = sha(new[0]), new[1]
                c.deleted.discard(doc_id)


async def _sample_rss(pid: int | None, t0: float, stop: asyncio.Event, every: float, out: list) -> None:
    while pid is not None:
        rss = rss_bytes(pid)
        if rss is not None:
            out.append((time.perf_counter() - t0, rss))
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except TimeoutError:
            pass


async def _verify(httpx, client, name: str, clients: list[_Client], base: int) -> dict:
    """Compare the collection with what the acknowledged writes say it holds."""
    info = (await client.get(f"/v1/collections/{name}")).json()
    expected = {i: h for c in clients for i, h in c.live.items() if i not in c.uncertain}
    uncertain = sum(len(c.uncertain) for c in clients)
    wrong_hash, missing, not_found_by_search, still_there = [], [], [], []
    for c in clients:
        for doc_id, digest in c.live.items():
            if doc_id in c.uncertain:
                continue
            r = await client.get(f"/v1/collections/{name}/documents/{doc_id}")
            if r.status_code != 200:
                missing.append(doc_id)
                continue
            if r.json()["metadata"].get("sha256") != digest:
                wrong_hash.append(doc_id)
            body = {"collection": name, "query": c.tokens[doc_id], "k": 1, "fields": ["text"]}
            hits = (await client.post("/v1/search", json=body)).json()["results"][0]["hits"]
            if not hits or hits[0]["doc_id"] != doc_id or sha(hits[0].get("text", "")) != digest:
                not_found_by_search.append(doc_id)
        for doc_id in c.deleted - c.uncertain:
            r = await client.get(f"/v1/collections/{name}/documents/{doc_id}")
            if r.status_code != 404:
                still_there.append(doc_id)
    count_ok = uncertain > 0 or info["num_documents"] == base + len(expected)
    return {
        "expected": base + len(expected),
        "found": info["num_documents"],
        "segments": len(info["segments"]),
        "uncertain": uncertain,
        "missing": len(missing),
        "wrong_content": len(wrong_hash),
        "not_found_by_search": len(not_found_by_search),
        "deleted_but_present": len(still_there),
        "exact": count_ok and not (missing or wrong_hash or not_found_by_search or still_there),
        "examples": (missing + wrong_hash + not_found_by_search + still_there)[:5],
    }


def _read_dataset(dataset_dir: Path, base_docs: int) -> tuple[list[dict], list[str], list[str]]:
    corpus, queries_file = dataset_dir / "corpus.jsonl", dataset_dir / "queries.jsonl"
    if not corpus.is_file() or not queries_file.is_file():
        raise NotFound(f"{dataset_dir} has no corpus.jsonl / queries.jsonl")
    docs = list(read_jsonl(corpus))
    if len(docs) < 2:
        raise InvalidInput(f"{corpus} needs at least 2 documents")
    base = [
        {"id": str(d["_id"]), "text": d.get("text", ""), "title": d.get("title", "")}
        for d in docs[:base_docs]
    ]
    # client documents reuse the corpus's texts (the rest of it, or all of it when small)
    pool = [d.get("text", "") or "empty" for d in (docs[base_docs:] or docs)]
    return base, pool, list(read_jsonl(queries_file, convert=_query_text))


def run(dataset_dir: Path, device: str | None = None, clients: int = 8, seconds: float = 60.0,
        warmup: float | None = None, base_docs: int = 1000, docs_per_client: int = 50, batch: int = 4,
        search_share: float = 0.6, k: int = 10, preset: str = "bm25", collection: str = "soak",
        url: str | None = None, pid: int | None = None, data_dir: Path | None = None,
        sample_s: float = 0.5, seed: int = 0, plot: Path | None = None, **_) -> dict:  # fmt: skip
    """Run the soak (see the module docstring) and return the bench report.

    Raises:
        InvalidInput: a non-loopback ``url``; NotFound: no corpus/queries in ``dataset_dir``.
    """
    httpx = require("httpx", "serve")
    clients, seconds, base_docs, pid = int(clients), float(seconds), int(base_docs), pid and int(pid)
    warmup = float(warmup) if warmup is not None else seconds / 5
    base, pool, queries = _read_dataset(Path(dataset_dir), base_docs)
    proc, tmp = None, None
    if url is None:
        if data_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="cascade-soak-")
            data_dir = Path(tmp.name)
        url = f"http://127.0.0.1:{_free_port()}"
        proc = start_server(Path(data_dir), int(url.rpartition(":")[2]))
        pid = proc.pid
    _check_loopback(url)
    try:
        wait_ready(httpx, url, proc)
        report = asyncio.run(_soak(httpx, url, base, pool, queries, pid, clients, seconds, warmup,
                                   int(docs_per_client), int(batch), float(search_share), int(k), preset,
                                   collection, float(sample_s), int(seed)))  # fmt: skip
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(120)
        if tmp is not None:
            tmp.cleanup()
    ours = report
    growth = ours["rss"]["growth"]
    ok = ours["pass"]
    out = {
        "benchmark": "soak",
        "ours": ours,
        "baseline": {"name": "the soak's invariants", "errors": 0, "documents": "exact",
                     "rss_growth_after_warmup_below": MAX_RSS_GROWTH},
        "ratio": round((1 + MAX_RSS_GROWTH) / (1 + growth), 3) if ok and growth is not None else (1.0 if ok else 0.0),
        "ratio_note": "0 when an invariant fails; else (1 + allowed RSS growth) / (1 + measured growth)",
    }  # fmt: skip
    if plot is not None:
        out["plots"] = [str(_plot(plot, ours))]
    return out


async def _soak(httpx, url, base, pool, queries, pid, n_clients, seconds, warmup, target, batch,
                search_share, k, preset, name, sample_s, seed) -> dict:  # fmt: skip
    limits = httpx.Limits(max_connections=n_clients + 1, max_keepalive_connections=n_clients + 1)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        if (await client.get(f"/v1/collections/{name}")).status_code == 200:
            (await client.delete(f"/v1/collections/{name}")).raise_for_status()
        spec = {"name": name, "pipeline": preset, "chunking": {"max_tokens": 8192}}  # documents stay whole
        (await client.post("/v1/collections", json=spec)).raise_for_status()
        for i in range(0, len(base), 500):
            r = await client.post(f"/v1/collections/{name}/documents", json={"documents": base[i : i + 500]})
            r.raise_for_status()
        rng = random.Random(seed)
        cs = [_Client(i, random.Random(rng.random())) for i in range(n_clients)]
        for c in cs:  # each client starts at its level: the collection's size stays level from the start
            texts = {f"soak-{c.index}-{j}": c.new_text(pool) for j in range(target)}
            c.next_id = target
            docs = [_body(i, t) for i, (t, _) in texts.items()]
            (
                await client.post(f"/v1/collections/{name}/documents", json={"documents": docs})
            ).raise_for_status()
            c.live.update((i, sha(t)) for i, (t, _) in texts.items())
            c.tokens.update((i, token) for i, (_, token) in texts.items())
        events: list[tuple[float, str, float]] = []
        errors: dict[str, int] = {}
        memory: list[tuple[float, int]] = []
        stop = asyncio.Event()
        t0 = time.perf_counter()
        deadline = time.monotonic() + seconds
        sampler = asyncio.create_task(_sample_rss(pid, t0, stop, sample_s, memory))
        await asyncio.gather(*(
            _client_loop(httpx, client, name, c, pool, queries, deadline, t0, events, errors, target, batch,
                         search_share, k)
            for c in cs
        ))  # fmt: skip
        wall = time.perf_counter() - t0
        stop.set()
        await sampler
        documents = await _verify(httpx, client, name, cs, len(base))
    lat = np.array([e[2] for e in events]) * 1000
    by_op = {
        op: [e[2] * 1000 for e in events if e[1] == op] for op in ("search", "ingest", "upsert", "delete")
    }
    after = [m for t, m in memory if t >= warmup]
    rss = {"after_warmup_mib": None, "end_mib": None, "max_mib": None, "growth": None}
    if after:
        rss = {"after_warmup_mib": round(after[0] / 2**20, 1), "end_mib": round(after[-1] / 2**20, 1),
               "max_mib": round(max(after) / 2**20, 1), "growth": round(after[-1] / after[0] - 1, 4)}  # fmt: skip
    n_err = sum(errors.values())
    memory_ok = rss["growth"] is None or rss["growth"] < MAX_RSS_GROWTH
    return {
        "clients": n_clients,
        "seconds": seconds,
        "warmup_s": warmup,
        "requests": len(events) + n_err,
        "errors": n_err,
        "error_kinds": errors,
        "throughput_rps": round(len(events) / wall, 1),
        "requests_by_op": {op: len(v) for op, v in by_op.items()},
        "latency_ms": _percentiles(lat),
        "latency_ms_by_op": {op: _percentiles(np.array(v)) for op, v in by_op.items()},
        "documents": documents,
        "rss": rss,
        "memory_mib": [(round(t, 2), round(m / 2**20, 1)) for t, m in memory],
        "latency_over_time": _over_time(events, max(1.0, seconds / 30)),
        "pass": n_err == 0 and documents["exact"] and memory_ok,
    }


def _over_time(events: list[tuple[float, str, float]], step: float) -> list[dict]:
    """p50/p99 latency (ms) and requests per window of ``step`` seconds."""
    out = []
    if not events:
        return out
    times = np.array([e[0] for e in events])
    lat = np.array([e[2] for e in events]) * 1000
    for start in np.arange(0, times.max() + step, step):
        sel = lat[(times >= start) & (times < start + step)]
        if len(sel):
            out.append({"t": round(float(start + step), 2), "requests": int(len(sel)),
                        "p50": round(float(np.percentile(sel, 50)), 3),
                        "p99": round(float(np.percentile(sel, 99)), 3)})  # fmt: skip
    return out


def _plot(path: Path, ours: dict) -> Path:
    from cascade.eval.plots import stacked_line_charts

    lat = ours["latency_over_time"]
    panels = [
        (
            {"p50": [(w["t"], w["p50"]) for w in lat], "p99": [(w["t"], w["p99"]) for w in lat]},
            "latency (ms)",
        ),
        ({"server RSS": [tuple(p) for p in ours["memory_mib"]]}, "resident memory (MiB)"),
    ]
    title = (f"soak: {ours['clients']} clients, {ours['requests']:,} requests, {ours['errors']} errors, "
             f"RSS growth {ours['rss']['growth']}")  # fmt: skip
    return stacked_line_charts(path, panels, "seconds", title)

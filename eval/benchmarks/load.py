"""Load test of ``POST /v1/search`` on a BEIR dataset, over loopback only.

It starts ``cascade serve`` as a child process on 127.0.0.1 (or uses ``--url``, which
must be a loopback address), creates and fills a collection for the preset once (kept in
``--data-dir`` for later runs), then runs two phases with the dataset's queries:

1. sequential (one client): API latency p50 minus the pipeline's own time (``timings_ms.total``,
   measured inside the server) = what the HTTP layer adds per request;
2. concurrent (``--concurrency`` clients): throughput, p50/p99 latency, errors.

Both phases are bounded in requests and in seconds, and the script stops by itself.

Example::

    python -m cascade.eval.benchmarks.load --dataset ../shared/datasets/scifact --preset bm25 --json
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from cascade.retrieval.errors import InvalidInput, require
from cascade.retrieval.jsonl import read_jsonl
from cascade.retrieval.progress import progress

log = logging.getLogger("cascade.loadtest")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(proc: subprocess.Popen | None) -> float | None:
    """User + system CPU of a child process so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
    except (AttributeError, OSError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise InvalidInput(f"the load test only targets loopback addresses, not {host!r}")


def start_server(data_dir: Path, port: int, extra: list[str] | None = None) -> subprocess.Popen:
    # the installed package runs the server: no path tricks, the same code a user runs
    cmd = [sys.executable, "-m", "cascade", "serve", "--port", str(port), "--data-dir", str(data_dir), *(extra or [])]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(httpx, url: str, proc: subprocess.Popen | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server at {url} not ready after {timeout}s")


def ensure_collection(httpx, url: str, name: str, preset: str, corpus: Path, batch: int = 1000) -> dict:
    """Create and fill the collection unless it already holds the corpus."""
    client = httpx.Client(base_url=url, timeout=3600)
    info = client.get(f"/v1/collections/{name}")
    if info.status_code == 200 and info.json()["num_documents"] > 0:
        if len(info.json()["segments"]) > 1:
            client.post(f"/v1/collections/{name}/compact").raise_for_status()
        return client.get(f"/v1/collections/{name}").json()
    if info.status_code == 404:
        # documents stay whole (BEIR scores whole documents)
        r = client.post(
            "/v1/collections", json={"name": name, "pipeline": preset, "chunking": {"max_tokens": 8192}}
        )
        r.raise_for_status()
    lines = [line for line in corpus.read_text().splitlines() if line.strip()]
    t = time.perf_counter()
    for i in progress(range(0, len(lines), batch), f"ingest {name}", unit="batch"):
        body = "\n".join(lines[i : i + batch]).encode()
        r = client.post(
            f"/v1/collections/{name}/documents",
            content=body,
            headers={"content-type": "application/x-ndjson"},
        )
        r.raise_for_status()
    log.info("ingested %d documents in %.1fs", len(lines), time.perf_counter() - t)
    # a bulk load ends with one compaction, as a read-mostly collection would
    client.post(f"/v1/collections/{name}/compact").raise_for_status()
    return client.get(f"/v1/collections/{name}").json()


async def _phase(httpx, url: str, body_for, concurrency: int, max_requests: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    pipeline_ms: list[float] = []
    server_ms: list[float] = []
    pipeline_cpu_ms: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker():
            nonlocal issued
            while issued < max_requests and time.monotonic() < deadline:
                i = issued
                issued += 1
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/search", json=body_for(i))
                except httpx.HTTPError as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                else:
                    timings = r.json()["timings_ms"]
                    pipeline_ms.append(timings["total"])
                    pipeline_cpu_ms.append(timings.get("total_cpu", 0.0))
                    # the floor (--floor) sends no Server-Timing
                    server_ms.append(float(r.headers.get("server-timing", "dur=nan").partition("dur=")[2]))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    pipe, server = np.array(pipeline_ms), np.array(server_ms)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 1),
        "latency_ms": _percentiles(np.array(latencies) * 1000),
        "pipeline_ms": _percentiles(pipe),  # the pipeline's own time, measured in the server
        "server_ms": _percentiles(server),  # Server-Timing: the server's time to the response head
        # per request, what the server adds to the pipeline (HTTP, validation, threads, JSON)
        "server_overhead_ms": _percentiles(server - pipe),
        "_pipeline_cpu_mean": float(np.mean(pipeline_cpu_ms)) if pipeline_cpu_ms else 0.0,
    }


def _percentiles(x: np.ndarray) -> dict[str, float | None]:
    if not len(x):
        return {"p50": None, "p90": None, "p99": None, "max": None}
    out = {p: round(float(np.percentile(x, q)), 3) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))}
    return out | {"max": round(float(x.max()), 3)}


def _query_text(obj) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise InvalidInput("expected an object with a 'text' string")
    return obj["text"]


def run_loadtest(
    dataset: Path,
    preset: str = "bm25",
    concurrency: int = 32,
    requests: int = 2000,
    seconds: float = 60.0,
    sequential_requests: int = 300,
    k: int = 10,
    data_dir: Path | None = None,
    url: str | None = None,
    index: Path | None = None,
    ray_replica_cpus: float | None = None,
    floor: bool = False,
    rounds: int = 1,
) -> dict:
    """Run both phases and return the report (see the module docstring). With ``index`` (a
    ``cascade index`` directory) the server serves it as read-only collection ``index`` instead
    of filling a collection; with ``ray_replica_cpus`` too, through ``cascade serve --ray``.

    ``floor``: also start the framework's floor (:mod:`.floor`, a FastAPI app answering a fixed
    body) and run the same phases against it, taking turns with Cascade ``rounds`` times (each
    side's best round is reported, as :func:`cascade.eval.bench.race` does), so that both sides
    meet the same machine load; the report gains ``floor`` and ``vs_floor``.

    Raises:
        InvalidInput: a non-loopback ``url``; NotFound: no corpus/queries in ``dataset``.
    """
    httpx = require("httpx", "serve")
    dataset = Path(dataset)
    corpus, queries_file = dataset / "corpus.jsonl", dataset / "queries.jsonl"
    if not corpus.is_file() or not queries_file.is_file():
        from cascade.retrieval.errors import NotFound

        raise NotFound(f"{dataset} has no corpus.jsonl / queries.jsonl")
    queries = list(read_jsonl(queries_file, convert=_query_text))
    proc = None
    if url is None:
        data_dir = Path(data_dir or Path.home() / ".cache" / "cascade" / "loadtest")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        extra = ["--index", f"index={Path(index).resolve()}"] if index is not None else []
        if index is not None and ray_replica_cpus is not None:
            extra += ["--ray", "--replica-cpus", str(ray_replica_cpus)]
        proc = start_server(data_dir, port, extra)
    _check_loopback(url)
    try:
        wait_ready(httpx, url, proc, timeout=300 if ray_replica_cpus is not None else 120)
        if index is not None:
            name, info = "index", httpx.get(f"{url}/v1/collections/index", timeout=30).json()
        else:
            name = f"{dataset.name}-{preset}"
            info = ensure_collection(httpx, url, name, preset, corpus)

        def body_for(i: int) -> dict:
            return {"collection": name, "query": queries[i % len(queries)], "k": k, "pipeline": preset}

        phases = (concurrency, requests, seconds, sequential_requests)
        if not floor:
            seq, conc = _measure(httpx, url, proc, body_for, *phases)
        else:
            floor_port = _free_port()
            floor_url = f"http://127.0.0.1:{floor_port}"
            # the floor answers one real answer of Cascade's, byte for byte: the same shape and size
            answer = tempfile.NamedTemporaryFile(suffix=".json")
            answer.write(httpx.post(f"{url}/v1/search", json=body_for(0), timeout=60).raise_for_status().content)
            answer.flush()
            floor_proc = subprocess.Popen(
                [sys.executable, "-m", "cascade.eval.benchmarks.floor", "--port", str(floor_port), "--body", answer.name],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                wait_ready(httpx, floor_url, floor_proc)
                ours_runs, floor_runs = [], []
                for _ in range(max(1, int(rounds))):
                    ours_runs.append(_measure(httpx, url, proc, body_for, *phases))
                    floor_runs.append(_measure(httpx, floor_url, floor_proc, body_for, *phases))
            finally:
                floor_proc.terminate()
                floor_proc.wait(30)
                answer.close()
            seq, conc = _best(ours_runs)
            floor_report = _floor_report(_best(floor_runs), ours_runs, floor_runs, seq, conc)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(120)
    report = {
        "benchmark": "loadtest",
        "preset": preset,
        "dataset": dataset.name,
        "num_documents": info["num_documents"],
        "k": k,
        "sequential": seq,
        "concurrent": conc,
        # what the service adds per request: API (client-side) p50 minus the pipeline's p50, and the
        # server-only share of it (Server-Timing minus pipeline), without the load generator's own time
        "overhead_ms_p50": {
            "api_minus_pipeline": round(seq["latency_ms"]["p50"] - seq["pipeline_ms"]["p50"], 3),
            "server_minus_pipeline": seq["server_overhead_ms"]["p50"],
        },
    }
    if floor:
        report.update(floor_report)
    return report


def _measure(httpx, url: str, proc, body_for, concurrency: int, requests: int, seconds: float,
             sequential_requests: int) -> tuple[dict, dict]:  # fmt: skip
    """Warm-up, then the sequential and the concurrent phase against ``url``."""
    asyncio.run(_phase(httpx, url, body_for, 4, 100, 30))  # warm-up: threads, caches, connections
    cpu0 = _cpu_seconds(proc)
    seq = asyncio.run(_phase(httpx, url, body_for, 1, sequential_requests, seconds))
    if cpu0 is not None:
        # the server's CPU per request (all its threads) minus the pipeline's own CPU: what
        # the HTTP layer costs, a figure that machine load does not inflate the way it does wall time
        per_request = (_cpu_seconds(proc) - cpu0) * 1000 / max(seq["requests"], 1)
        seq["server_cpu_ms_per_request"] = round(per_request, 3)
        seq["http_cpu_ms_per_request"] = round(per_request - seq.pop("_pipeline_cpu_mean"), 3)
    cpu0 = _cpu_seconds(proc)
    conc = asyncio.run(_phase(httpx, url, body_for, concurrency, requests, seconds))
    if cpu0 is not None:
        conc["server_cpu_ms_per_request"] = round((_cpu_seconds(proc) - cpu0) * 1000 / max(conc["requests"], 1), 3)
    conc.pop("_pipeline_cpu_mean")
    seq.pop("_pipeline_cpu_mean", None)
    return seq, conc


def _best(runs: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """Per phase, the round with the most requests per second (the least disturbed one)."""
    return tuple(max((r[i] for r in runs), key=lambda p: p["throughput_rps"]) for i in (0, 1))


def _floor_report(best_floor, ours_runs, floor_runs, seq, conc) -> dict:
    fseq, fconc = best_floor
    keep = ("requests", "errors", "throughput_rps", "latency_ms", "server_cpu_ms_per_request")
    per_round = [
        {"ours_rps": o[1]["throughput_rps"], "floor_rps": f[1]["throughput_rps"],
         "rps_ratio": round(o[1]["throughput_rps"] / f[1]["throughput_rps"], 3),
         "p99_ratio": round(o[1]["latency_ms"]["p99"] / f[1]["latency_ms"]["p99"], 3)}
        for o, f in zip(ours_runs, floor_runs, strict=True)
    ]  # fmt: skip
    return {
        "floor": {
            "name": "FastAPI + uvicorn, fixed 10-hit body (cascade.eval.benchmarks.floor)",
            "sequential": {k: fseq[k] for k in keep if k in fseq},
            "concurrent": {k: fconc[k] for k in keep if k in fconc},
        },
        # ours / floor: requests/s (1 = as fast as the framework alone) and p99 (1 = as short)
        "vs_floor": {
            "sequential_rps": round(seq["throughput_rps"] / fseq["throughput_rps"], 3),
            "concurrent_rps": round(conc["throughput_rps"] / fconc["throughput_rps"], 3),
            "concurrent_p99": round(conc["latency_ms"]["p99"] / fconc["latency_ms"]["p99"], 3),
            "rounds": per_round,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cascade.eval.benchmarks.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--preset", default="bm25", help="bm25, hybrid (needs the dense retriever), ...")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=2000, help="most requests in the concurrent phase")
    p.add_argument("--sequential-requests", type=int, default=300)
    p.add_argument("--seconds", type=float, default=60.0, help="most seconds per phase")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--data-dir", type=Path, help="where the server keeps the collection (reused across runs)")
    p.add_argument("--url", help="an already running server (loopback only)")
    p.add_argument("--index", type=Path, help="serve this `cascade index` directory (read-only) instead")
    p.add_argument("--ray-replica-cpus", type=float, help="with --index: through `cascade serve --ray`, CPUs per replica")
    p.add_argument("--floor", action="store_true", help="also measure a bare FastAPI app with a fixed answer")
    p.add_argument("--rounds", type=int, default=1, help="with --floor: turns each side takes (best kept)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = run_loadtest(
        args.dataset, args.preset, args.concurrency, args.requests, args.seconds,
        args.sequential_requests, args.k, args.data_dir, args.url, args.index, args.ray_replica_cpus,
        args.floor, args.rounds,
    )  # fmt: skip
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0 if report["concurrent"]["errors"] == 0 and report["sequential"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

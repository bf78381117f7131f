"""The framework's floor for the load test (``load --floor``): a FastAPI app under uvicorn, run
the way ``cascade serve`` runs (same uvicorn defaults, no access log), whose ``POST
/v1/search`` reads the request body as JSON and answers a fixed body: the one in ``--body FILE``
(the load test saves a real answer of Cascade's there, so both sides send the same bytes), or
``--hits`` hits of the same shape. No search, no validation model, no middleware: what any
FastAPI service pays per request, the most a search service on this stack could reach.

Run as ``python -m cascade.eval.benchmarks.floor --port P [--body FILE | --hits 10]``.
"""

import argparse
import json
from pathlib import Path

from cascade.retrieval.errors import require


def fixed_body(hits: int = 10) -> bytes:
    """A search answer of ``hits`` hits, as Cascade's ``SearchOut`` serializes one."""
    return json.dumps(
        {
            "collection": "floor",
            "pipeline": "bm25",
            "results": [
                {
                    "query": "what the floor answers for every query",
                    "hits": [{"id": f"doc{i}", "doc_id": f"doc{i}", "score": 20.0 - i} for i in range(hits)],
                }
            ],
            "timings_ms": {"retrieve:bm25": 0.0, "total": 0.0},
        },
        separators=(",", ":"),
    ).encode()


# no `from __future__ import annotations` here: FastAPI reads the route's `Request` annotation at
# run time, and `Request` is imported inside the factory (importing this module stays light)
def create_floor_app(body: bytes):
    fastapi = require("fastapi", "serve")
    from fastapi import Request, Response

    app = fastapi.FastAPI()

    @app.post("/v1/search")
    async def search(request: Request):
        json.loads(await request.body())  # a service reads the query it answers
        return Response(body, media_type="application/json")

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cascade.eval.benchmarks.floor", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hits", type=int, default=10)
    p.add_argument("--body", type=Path, help="answer these bytes (a JSON search answer) instead")
    args = p.parse_args(argv)
    uvicorn = require("uvicorn", "serve")
    uvicorn.run(
        create_floor_app(args.body.read_bytes() if args.body else fixed_body(args.hits)),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

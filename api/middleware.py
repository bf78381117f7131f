"""Pure ASGI middleware (no per-request task or body copy, so it adds little per request):
request ids, body size limits, metrics, and the 500 answer for bugs.

- ``X-Request-ID``: echoed when the client sent a sane one (printable, <= 128 chars),
  generated otherwise; always on the response.
- Body size: a ``Content-Length`` over the limit is refused with 413 before reading; a
  streamed body is counted as it arrives and refused (413) once over.
- ``Server-Timing: app;dur=MS``: the server's time from the request to the response head.
- A bug (any exception that is not the project's) becomes a JSON 500 carrying the request id;
  the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from cascade.retrieval.errors import PayloadTooLarge

from .metrics import Metrics

log = logging.getLogger("cascade.api")

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _json_body(status: int, type_: str, message: str) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message}}).encode()


class ServiceMiddleware:
    def __init__(self, app, metrics: Metrics, max_body: int):
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = None
        length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _SANE_ID.match(candidate) else None
            elif name == b"content-length":
                length = value
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = {"code": 500, "started": False}
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                # Server-Timing: the server's own time up to the response, for clients and load tests
                timing = (b"server-timing", f"app;dur={(time.perf_counter() - t0) * 1000:.3f}".encode())
                message = {**message, "headers": [*message.get("headers", []), rid_header, timing]}
            await send(message)

        received = 0
        limit = self.max_body

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
            return message

        try:
            if length is not None and (not length.isdigit() or int(length) > limit):
                await self._reply(
                    send_with_id, 413, "PayloadTooLarge", f"request body over the limit of {limit} bytes"
                )
            else:
                await self.app(scope, counted_receive, send_with_id)
        except Exception:
            log.exception("internal error in %s %s (request id %s)", scope["method"], scope["path"], rid)
            if not status["started"]:
                await self._reply(send_with_id, 500, "InternalError", f"internal error (request id {rid})")
        finally:
            route = scope.get("route")
            self.metrics.observe_request(
                scope["method"], getattr(route, "path", "unmatched"), status["code"], time.perf_counter() - t0
            )

    @staticmethod
    async def _reply(send, status: int, type_: str, message: str) -> None:
        body = _json_body(status, type_, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

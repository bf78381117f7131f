"""Pure ASGI middleware (no per-request task or body copy, so it adds little per request):
request ids, body size limits, metrics, and the 500 answer for bugs.

- ``X-Request-ID``: echoed when the client sent a sane one (printable, <= 128 chars),
  generated otherwise; always on the response.
- Body size: a ``Content-Length`` over the limit is refused with 413 before reading; a
  streamed body is counted as it arrives and refused (413) once over.
- ``Server-Timing: app;dur=MS``: the server's time from the request to the response head.
- A bug (any exception that is not the project's) becomes a JSON 500 carrying the request id;
  the traceback goes to the log, never to the client.
- First contact: a POST/PUT/PATCH body sent as ``application/x-www-form-urlencoded`` (what
  ``curl -d`` sends unless told otherwise) or ``text/plain`` (``fetch`` with a string body)
  is read as JSON when it is valid JSON, and as NDJSON on a ``.../documents`` route when every
  line is; otherwise it is refused with a 415 that says to send ``Content-Type:
  application/json``. Real form uploads (``multipart/form-data``) are untouched.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
import uuid

from cascade.retrieval.errors import PayloadTooLarge

from .metrics import Metrics

log = logging.getLogger("cascade.api")

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# content types that clients send by default with a body that is usually JSON
_SNIFFED = ("application/x-www-form-urlencoded", "text/plain")
_WITH_BODY = ("POST", "PUT", "PATCH")


def _json_error(data: bytes) -> str | None:
    """Why ``data`` is not one JSON document (None when it is)."""
    try:
        json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError as e:
        return str(e)
    return None


def _is_ndjson(data: bytes) -> bool:
    lines = [line for line in data.splitlines() if line.strip()]
    return len(lines) > 1 and all(_json_error(line) is None for line in lines)


def _json_body(status: int, type_: str, message: str) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message}}).encode()


class ServiceMiddleware:
    def __init__(self, app, metrics: Metrics, max_body: int):
        self.app, self.metrics, self.max_body = app, metrics, max_body
        # generated ids: a random prefix per process and a counter, 32 hex digits like a uuid4's,
        # without a call into the OS's random source on every request
        self._id_prefix, self._ids = uuid.uuid4().hex[:16], itertools.count()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = None
        length = None
        ctype = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _SANE_ID.match(candidate) else None
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                ctype = value.decode("latin-1").split(";")[0].strip().lower()
        rid = rid or f"{self._id_prefix}{next(self._ids):016x}"
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
            elif ctype in _SNIFFED and scope["method"] in _WITH_BODY:
                replay = await self._as_json(scope, ctype, counted_receive, send_with_id)
                if replay is not None:
                    await self.app(scope, replay, send_with_id)
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

    async def _as_json(self, scope, ctype: str, receive, send):
        """Read the whole body; when it is JSON (or NDJSON for a documents route) relabel the
        request and return a ``receive`` that replays the body, else answer and return None."""
        chunks = []
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None  # the client went away
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except PayloadTooLarge as e:
            await self._reply(send, 413, "PayloadTooLarge", str(e))
            return None
        body = b"".join(chunks)
        documents = scope["path"].rstrip("/").endswith("/documents")
        problem = _json_error(body) if body.strip() else None
        if problem is None:
            as_type = b"application/json"
        elif documents and _is_ndjson(body):
            as_type = b"application/x-ndjson"
        else:
            hint = (
                "; for NDJSON send 'Content-Type: application/x-ndjson' with curl --data-binary "
                "(curl -d drops the newlines)"
                if documents
                else ""
            )
            await self._reply(
                send,
                415,
                "UnsupportedMediaType",
                f"the body came as {ctype} (curl -d's default) and is not JSON ({problem}): send JSON "
                f"with the header 'Content-Type: application/json' (curl -H 'Content-Type: application/json'){hint}",
            )
            return None
        if body.strip():
            scope["headers"] = [
                (n, as_type if n == b"content-type" else v) for n, v in scope["headers"]
            ]
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    @staticmethod
    async def _reply(send, status: int, type_: str, message: str) -> None:
        body = _json_body(status, type_, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

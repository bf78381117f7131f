"""One place where errors become HTTP responses: ``{"error": {"type", "message"}}``.

The project's :class:`CascadeError` tree carries its status code; request validation
(including malformed JSON) is a 422; an unknown route or method keeps its 404/405; anything
else is a bug, answered 500 by :mod:`api.middleware` without details.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.errors import CascadeError


def error_response(status: int, type_: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status)


def _where(loc) -> str:
    # drop "body" and pydantic's union-member tags ("function-after[...]", "list[...]")
    parts = [str(p) for p in loc if p != "body" and "[" not in str(p)]
    return ".".join(parts) or "body"


async def _cascade_error(request: Request, exc: CascadeError) -> JSONResponse:
    return error_response(exc.http_status, type(exc).__name__, str(exc))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems, seen = [], set()
    for err in exc.errors()[:10]:
        if err.get("type") == "json_invalid":
            problems.append(f"invalid JSON: {err.get('ctx', {}).get('error', err['msg'])}")
        elif (where := _where(err["loc"])) not in seen:  # a union's first member speaks for it
            seen.add(where)
            problems.append(f"{where}: {err['msg']}")
    return error_response(422, "ValidationError", "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    resp = error_response(exc.status_code, "HTTPError", str(exc.detail))
    for k, v in (exc.headers or {}).items():
        resp.headers[k] = v
    return resp


def install(app: FastAPI) -> None:
    app.add_exception_handler(CascadeError, _cascade_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

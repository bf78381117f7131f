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

from cascade.retrieval.errors import CascadeError


def error_response(status: int, type_: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status)


def _where(loc) -> str:
    # drop "body" and pydantic's union-member tags ("function-after[...]", "list[...]")
    parts = [str(p) for p in loc if p != "body" and "[" not in str(p)]
    return ".".join(parts) or "body"


async def _cascade_error(request: Request, exc: CascadeError) -> JSONResponse:
    resp = error_response(exc.http_status, type(exc).__name__, str(exc))
    retry_after = getattr(exc, "retry_after", None)  # Overloaded: when to come back
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems: list[str] = []
    by_place: dict[str, list[dict]] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            problems.append(f"invalid JSON: {err.get('ctx', {}).get('error', err['msg'])}")
        else:
            by_place.setdefault(_where(err["loc"]), []).append(err)
    for where, errs in list(by_place.items())[:10]:
        # a union (str | list) reports one error per member: the member of the input's own
        # type says what is wrong, the other only that the type differs ("..._type")
        best = next((e for e in errs if not e["type"].endswith("_type")), errs[0])
        problems.append(f"{where}: {best['msg']}")
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

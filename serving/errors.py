"""One JSON error body for every failure: what went wrong, and for which field."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from serving.schemas import ErrorBody, ErrorDetail, ErrorResponse

log = logging.getLogger("serving.errors")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


#: The error code of a request body over CHURN_MAX_BODY_BYTES, however it was refused.
BODY_TOO_LARGE = "body_too_large"
#: The status of a request whose client went away before its answer (nginx's): never sent,
#: only counted in /metrics, apart from the server's own errors.
CLIENT_CLOSED_REQUEST = 499
#: Field errors listed in one response; a 10,000-row batch can have ten of thousands.
_MAX_DETAILS = 20


def _body(code: str, message: str, details: list[ErrorDetail] | None = None) -> dict[str, Any]:
    return ErrorResponse(
        error=ErrorBody(code=code, message=message, details=details or [])
    ).model_dump()


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The error body for one problem, for code that answers outside FastAPI's handlers."""
    return _body(code, message, [ErrorDetail(field=field, problem=message)] if field else None)


def _field(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p != "body"]
    return ".".join(parts) or "body"


def _problem(error: dict[str, Any]) -> str:
    problem = str(error.get("msg", "invalid"))
    if "input" in error and error.get("type") not in {"missing", "json_invalid"}:
        shown = repr(error["input"])
        problem += f" (got {shown[:80]})"
    return problem


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = errors[0].get("ctx", {}).get("error", "malformed JSON")
        return JSONResponse(
            _body("malformed_json", f"request body is not valid JSON: {detail}"), status_code=400
        )
    details = [
        ErrorDetail(field=_field(tuple(e.get("loc", ()))), problem=_problem(e))
        for e in errors[:_MAX_DETAILS]
    ]
    summary = "; ".join(f"{d.field}: {d.problem}" for d in details[:5])
    if len(errors) > len(details):
        summary += f" (and {len(errors) - len(details)} more error(s) not listed)"
    return JSONResponse(_body("invalid_request", summary, details), status_code=422)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    details = [ErrorDetail(field=exc.field, problem=exc.message)] if exc.field else []
    return JSONResponse(_body(exc.code, exc.message, details), status_code=exc.status)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: BODY_TOO_LARGE}.get(
        exc.status_code, "http_error"
    )
    field = "body" if exc.status_code == 413 else None
    return JSONResponse(
        error_body(code, str(exc.detail), field), status_code=exc.status_code, headers=exc.headers
    )


async def _client_gone(_: Request, exc: Exception) -> Response:
    """The body's sender left mid-way: no traceback, no 500. The server protocol logs it."""
    assert isinstance(exc, ClientDisconnect)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return JSONResponse(_body("internal_error", "internal error; see the server log"), 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)

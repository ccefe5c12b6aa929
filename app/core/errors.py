"""Typed domain errors and the one place that turns them (and everything else) into JSON."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.headers import SECURITY_HEADER_DICT

logger = logging.getLogger("junction.errors")


class DomainError(Exception):
    """Raised below the routers; rendered as `{"error": code, "detail": detail}`."""

    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        # Response headers the answer carries (a 503's Retry-After).
        self.headers = headers or {}

    def response_headers(self) -> dict[str, str]:
        """Headers the answer carries besides the body (a Retry-After, say)."""
        return {}


class BadRequest(DomainError):
    status_code = 400
    code = "bad_request"


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"


class TokenExpired(Unauthorized):
    code = "token_expired"


class TokenRevoked(Unauthorized):
    code = "token_revoked"


class InvalidToken(Unauthorized):
    """The bearer token fails verification (signature, audience, issuer, algorithm, claims)."""

    code = "invalid_token"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class PreconditionFailed(DomainError):
    """A conditional request's precondition (`If-Match`) does not hold."""

    status_code = 412
    code = "precondition_failed"


class InvalidInput(DomainError):
    """Input that passed the schema but breaks a rule; 422 like schema errors."""

    status_code = 422
    code = "validation_error"


class InvalidFields(InvalidInput):
    """Named fields break their rules: 422 with `fields: [{field, message}]`, the one shape of
    every field error (the schema's own errors are rendered through it too)."""

    def __init__(self, errors: Sequence[tuple[str, str]], *, detail: str | None = None) -> None:
        detail = detail or "; ".join(f"{field}: {message}" for field, message in errors)
        fields = [{"field": field, "message": message} for field, message in errors]
        super().__init__(detail or "invalid request", fields=fields)


class InvalidField(InvalidFields):
    """One named field breaks a rule (`detail`, when given, says it at more length)."""

    def __init__(self, field: str, message: str, *, detail: str | None = None) -> None:
        super().__init__([(field, message)], detail=detail)


class ServiceUnavailable(DomainError):
    status_code = 503
    code = "service_unavailable"


class UpstreamError(DomainError):
    """A third party (an OAuth provider) failed; never carries the provider's echo of secrets."""

    status_code = 502
    code = "upstream_error"


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "providers", 0, "priority") -> "providers[0].priority"; keep query/path prefixes.
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += ("." if name else "") + str(part)
    return name or "body"


def _field_error(err: Any) -> tuple[str, str]:
    if err.get("type") == "extra_forbidden":
        return _field_name(err.get("loc", ())), "unknown field"
    return _field_name(err.get("loc", ())), str(err.get("msg", "invalid"))


def invalid_fields(exc: RequestValidationError | ValidationError) -> InvalidFields:
    """Input that failed its schema (the request's, or a model built from it), as the one
    field-error shape."""
    return InvalidFields([_field_error(e) for e in exc.errors()])


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _domain_error(request, invalid_fields(exc))


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = dict(exc.headers)
    headers.update(exc.response_headers())
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(exc.code, exc.detail, **exc.extra),
        headers=headers,
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route of the request's path accepts (RFC 9110 15.5.6).

    Starlette's router stops at the first route whose path matches and answers with that
    route's methods only; a path served by several routes (a hot GET on the app, its POST and
    DELETE on a router) would advertise a fraction. Each method is tried against every route
    through the routes' own `matches` (included routers answer for their routes), so this holds
    however the routes are grouped. Runs on 405 answers only.
    """
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else code
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return JSONResponse(
        status_code=exc.status_code, content=error_body(code, detail), headers=headers
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Pool exhausted or database unreachable: tell the caller to retry, never hang or 500.
    logger.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        status_code=503,
        content=error_body("database_unavailable", "the database is busy or unreachable; retry"),
        headers={"Retry-After": "1"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    request_id = getattr(request.state, "request_id", None)
    # This handler answers from Starlette's outermost middleware, outside the request-id
    # middleware, so it sets that middleware's headers itself.
    return JSONResponse(
        status_code=500,
        content=error_body(
            "internal_error",
            "an unexpected error occurred; it has been logged",
            request_id=request_id,
        ),
        headers={**SECURITY_HEADER_DICT, "X-Request-ID": request_id}
        if request_id
        else SECURITY_HEADER_DICT,
    )


# SQLSTATE classes that mean "no usable database right now": 08 connection exceptions, 57
# operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now:
# starting up or shutting down).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "57")


def _is_connection_error(exc: DBAPIError) -> bool:
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return (
        bool(getattr(exc, "connection_invalidated", False))
        or isinstance(exc, OperationalError)
        or sqlstate.startswith(_UNAVAILABLE_SQLSTATE_CLASSES)
    )


# SQLSTATE classes of text the database refuses to store (NUL bytes, unpaired surrogates).
_UNSTORABLE_TEXT = {"22021", "22P05"}


async def _unstorable_text(request: Request, exc: Exception) -> JSONResponse:
    # The last line of defence: schemas refuse such text where they can; whatever slips through
    # is still the caller's bad input, never a 500.
    return JSONResponse(
        status_code=422,
        content=error_body(
            "validation_error",
            "text contains characters that cannot be stored (NUL or unpaired surrogates)",
        ),
    )


async def _dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if getattr(exc.orig, "sqlstate", None) in _UNSTORABLE_TEXT:
        return await _unstorable_text(request, exc)
    if _is_connection_error(exc) or "statement timeout" in str(exc.orig).lower():
        return await _database_unavailable(request, exc)
    return await _unexpected(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    # Refused, reset or aborted while connecting (the driver raises these unwrapped).
    app.add_exception_handler(ConnectionError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _dbapi_error)
    app.add_exception_handler(UnicodeEncodeError, _unstorable_text)
    app.add_exception_handler(Exception, _unexpected)

"""One HTTP request's context: its id, the security headers on its answer, its figures and its
access log line.

`RequestContext` is what `RequestContextMiddleware` wraps every request in, and what the hot
reads served past the middleware stack use too (app/core/hot_path.py), so both count and log a
request the same way. The figures themselves are app/core/metrics.py's `REQUEST_FIGURES`.
"""

from __future__ import annotations

import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.headers import SECURITY_HEADERS
from app.core.logging import request_id_var
from app.core.metrics import REQUEST_FIGURES

access_logger = logging.getLogger("junction.access")

REQUEST_ID_HEADER = b"x-request-id"

# The method is the client's choice of token (RFC 9110 allows any): a label of every one a
# client sends would let anyone grow the metric's cardinality. Others count as "OTHER".
_LABELLED_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def _valid_request_id(value: bytes) -> str | None:
    text = value.decode("latin-1")[:128]
    return text if text and all(c.isalnum() or c in "-_.:" for c in text) else None


class RequestContext:
    """One HTTP request's context: its id (in the scope, the log context and the answer), the
    security headers on its answer, and, when it ends (`finish`), its metrics and access log
    line. Used by `RequestContextMiddleware` and by the hot reads (app/core/hot_path.py)."""

    __slots__ = ("_downstream", "_started", "_token", "request_id", "status")

    def __init__(self, scope: Scope, send: Send) -> None:
        # A scan, not dict(headers): this runs on every request and wants one header (the last
        # one given, as before).
        incoming = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                incoming = value
        # 32 hex digits, as uuid4().hex gave, without building a UUID.
        request_id = (_valid_request_id(incoming) if incoming else None) or os.urandom(16).hex()
        self.request_id = request_id
        self._token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        self._downstream = send
        self._started = time.perf_counter()
        self.status = 500

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            # A new list: the answer's own (a prepared response's) is not changed.
            own = (REQUEST_ID_HEADER, self.request_id.encode())
            message["headers"] = [*message.get("headers", ()), own, *SECURITY_HEADERS]
        await self._downstream(message)

    def finish(self, scope: Scope) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        elapsed = time.perf_counter() - self._started
        label = method if method in _LABELLED_METHODS else "OTHER"
        status = self.status
        REQUEST_FIGURES.count(template, label, status, elapsed)
        if access_logger.isEnabledFor(logging.INFO):
            # The path only: query strings can carry OAuth codes and states.
            access_logger.info(
                "%s %s %s %.1fms",
                method,
                scope.get("path", ""),
                status,
                elapsed * 1000,
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
        request_id_var.reset(self._token)


class RequestContextMiddleware:
    """Pure ASGI: a request id in and out, security headers, per-route metrics. (No
    BaseHTTPMiddleware overhead.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(scope, send)
        try:
            await self.app(scope, receive, context.send)
        finally:
            context.finish(scope)

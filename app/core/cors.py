"""CORS for browser frontends: Starlette's CORSMiddleware for the origins CORS_ALLOW_ORIGINS lists.

Two things differ from the middleware alone: a request from an origin not on the list is passed
to the app untouched (no CORS header at all; a preflight then answers as it would without CORS,
405), and a preflight refused for its method or headers answers the service's JSON error body
rather than plain text.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Settings
from app.core.errors import error_body
from app.core.request_context import REQUEST_ID_HEADER

# Every method a route of the service answers, and the headers a frontend sends to them.
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", REQUEST_ID_HEADER.decode())
# Response headers a page may read besides the CORS-safelisted ones: the request id to quote,
# when to retry (429, 503), why a token was refused (401).
EXPOSED_HEADERS = (REQUEST_ID_HEADER.decode(), "Retry-After", "WWW-Authenticate")


class _JSONRefusals(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        detail = bytes(response.body).decode()  # "Disallowed CORS method, headers"
        body = json.dumps(error_body("cors_preflight_refused", detail)).encode()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        headers["content-type"] = "application/json"
        return Response(body, status_code=response.status_code, headers=headers)


class CorsMiddleware:
    """Pure ASGI; installed only when CORS_ALLOW_ORIGINS is set."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.origins = frozenset(settings.cors_origins)
        self.any_origin = "*" in self.origins
        self.cors = _JSONRefusals(
            app,
            allow_origins=settings.cors_origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=settings.cors_allow_credentials,
            expose_headers=EXPOSED_HEADERS,
            max_age=settings.cors_max_age_s,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
        if origin is not None and (self.any_origin or origin in self.origins):
            await self.cors(scope, receive, send)
            return

        async def send_varying(message: Message) -> None:
            # The answer depends on Origin: a shared cache must not hand it to an allowed one.
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"vary", b"Origin")]
            await send(message)

        await self.app(scope, receive, send_varying)

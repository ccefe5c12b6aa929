"""Request limits, enforced before anything parses a request: head size, body size, JSON depth.

The routes parse their bodies before they authenticate (FastAPI reads the body first), so an
anonymous caller could make the service parse whatever it sends. Here, in front of everything:

- a request whose head (request line and headers) is over `REQUEST_MAX_HEADER_BYTES` is 431;
  `junction serve` refuses it while the head arrives (app/core/uvicorn_protocol.py), this
  middleware again behind any other server;
- a body over `REQUEST_MAX_BODY_BYTES` (`REQUEST_MAX_BATCH_BODY_BYTES` on the usage batch route)
  is 413: at once from its Content-Length, or as soon as a streamed body passes the limit;
- a JSON body nested deeper than `REQUEST_MAX_JSON_DEPTH` is 422, found by a scan of its bytes
  rather than by building it.

A request without a body (the hot reads) costs one pass over its header list.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Settings
from app.core.errors import error_body

_WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes allowed the larger batch limit, by exact path.
BATCH_PATHS = frozenset({"/usage/openai"})

# A JSON string, or an unterminated one up to the end (possessive, so a malformed body costs one
# pass rather than one per quote).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)
# What is left once strings are gone: each bracket becomes +1 or -1, everything else is dropped.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the lists and objects of a JSON text nest deeper than `limit`."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # too few brackets to nest that deep: the usual case, at C speed
    steps = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", steps)), default=0) > limit


def head_too_large(scope: Scope, max_header_bytes: int) -> bool:
    """Whether a request's head (its request line and headers) is over the limit: what this
    middleware asks of a request without a body, and the hot reads served past it ask too
    (app/core/hot_path.py)."""
    headers = scope["headers"]
    head = len(scope.get("raw_path") or b"") + len(scope["query_string"]) + 4 * len(headers)
    for name, value in headers:
        head += len(name) + len(value)
    return head > max_header_bytes


async def _answer(send: Send, status: int, code: str, detail: str, **extra: Any) -> None:
    body = json.dumps(error_body(code, detail, **extra)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _ClientGone(Exception):
    """The client disconnected before its body was all sent."""


class RequestLimitsMiddleware:
    """Pure ASGI: 431, 413 and 422 before the app reads anything."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        max_body_bytes: int,
        max_batch_body_bytes: int,
        max_json_depth: int,
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.max_batch_body_bytes = max_batch_body_bytes
        self.max_json_depth = max_json_depth

    @classmethod
    def options(cls, settings: Settings) -> dict[str, int]:
        return {
            "max_header_bytes": settings.request_max_header_bytes,
            "max_body_bytes": settings.request_max_body_bytes,
            "max_batch_body_bytes": settings.request_max_batch_body_bytes,
            "max_json_depth": settings.request_max_json_depth,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in _WITHOUT_BODY:
            # The hot reads: only the size of the head. No GET route reads a body, and one left
            # unread is never buffered (the server stops reading the connection).
            if head_too_large(scope, self.max_header_bytes):
                await self._head_too_large(send)
                return
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        head = len(scope.get("raw_path") or b"") + len(scope["query_string"]) + 4 * len(headers)
        length: bytes | None = None
        streamed = False
        json_body = True
        for name, value in headers:
            head += len(name) + len(value)
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                streamed = True
            elif name == b"content-type":
                json_body = b"json" in value.lower()
        if head > self.max_header_bytes:
            await self._head_too_large(send)
            return
        if length is None and not streamed:
            await self.app(scope, receive, send)
            return
        limit = self.max_batch_body_bytes if scope["path"] in BATCH_PATHS else self.max_body_bytes
        if length is not None:
            if not length.isdigit():
                await _answer(send, 400, "bad_request", "Content-Length must be a number")
                return
            if int(length) > limit:
                await self._too_large(send, limit)
                return
        try:
            body = await self._read_body(receive, limit)
        except _ClientGone:
            return  # nobody is left to answer
        if body is None:
            await self._too_large(send, limit)
            return
        if json_body and json_depth_exceeds(body, self.max_json_depth):
            detail = f"JSON nested deeper than {self.max_json_depth} levels"
            await _answer(
                send,
                422,
                "validation_error",
                f"body: {detail}",
                fields=[{"field": "body", "message": detail}],
            )
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _read_body(receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None as soon as it passes `limit` (the rest is never read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _head_too_large(self, send: Send) -> None:
        await _answer(
            send,
            431,
            "request_header_fields_too_large",
            f"the request line and headers are over {self.max_header_bytes} bytes",
        )

    async def _too_large(self, send: Send, limit: int) -> None:
        await _answer(send, 413, "payload_too_large", f"the body is over {limit} bytes")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then what the client sends next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed

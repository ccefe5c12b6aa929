"""A raw ASGI app: the floor the hot reads are measured against (no framework, no middleware).

It answers the bytes a section stored (`PUT /{name}`, with an optional `ETag` header) with the
headers the service sends: GET `/{name}` is a 200 with them, GET `/{name}/not-modified` a 304
with the tag. Served by uvicorn with the service's options (`harness.run_raw_asgi`).
"""

from __future__ import annotations

from typing import Any

_BODIES: dict[str, tuple[bytes, bytes | None]] = {}
_JSON = (b"content-type", b"application/json")
Scope = dict[str, Any]


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path: str = scope["path"]
    if scope["method"] == "PUT":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        etag = dict(scope["headers"]).get(b"etag")
        _BODIES[path] = (body, etag)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    not_modified = path.endswith("/not-modified")
    body, etag = _BODIES.get(path.removesuffix("/not-modified"), (b"{}", None))
    headers = [(b"etag", etag)] if etag is not None else []
    if not_modified:
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})

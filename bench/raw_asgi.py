"""A raw ASGI app: the floor the hot reads are measured against (no framework, no middleware).

It answers the bytes a section stored: `PUT /{name}` with the answer's body, its status in
`x-answer-status` (200 by default) and its headers, as a JSON list of `[name, value]` pairs,
in `x-answer-headers`; `GET /{name}` then answers exactly that. A section stores the service's
own answer (`store_answer`), headers and all but the two uvicorn adds to every answer (`date`,
`server`), so the floor sends the same bytes (its request id a fixed one of the same length).
Served by uvicorn with the service's options (`harness.run_raw_asgi`).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

_ANSWERS: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {}
# Added by uvicorn to every answer, the floor's as well as the service's.
_SERVER_HEADERS = frozenset({"date", "server"})
Scope = dict[str, Any]


async def store_answer(raw: httpx.AsyncClient, name: str, answer: httpx.Response) -> None:
    """Make `GET /{name}` of the raw app answer what the service answered in `answer`."""
    headers = [
        [key.decode("latin-1"), value.decode("latin-1")]
        for key, value in answer.headers.raw
        if key.decode("latin-1").lower() not in _SERVER_HEADERS
    ]
    stored = await raw.put(
        f"/{name}",
        content=answer.content,
        headers={
            "x-answer-status": str(answer.status_code),
            "x-answer-headers": json.dumps(headers),
        },
    )
    stored.raise_for_status()


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
        given = dict(scope["headers"])
        status = int(given.get(b"x-answer-status", b"200"))
        pairs = json.loads(given.get(b"x-answer-headers", b"[]"))
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
        _ANSWERS[path] = (status, headers, body)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    # Anything not stored (the harness's /livez while it waits for the start) is a plain 200.
    status, headers, body = _ANSWERS.get(path, (200, [], b"{}"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

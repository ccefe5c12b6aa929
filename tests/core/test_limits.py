"""Request limits: oversized heads, bodies and nesting are refused before the app reads them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.limits import json_depth_exceeds
from app.core.schemas import check_storable
from tests.conftest import (
    IS_POSTGRES,
    REDIS_URL,
    TokenFactory,
    bearer,
)
from tests.replica_server import ReplicaServer

ROOT = Path(__file__).resolve().parents[2]
JSON = {"content-type": "application/json"}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_an_unauthenticated_body_over_the_limit_is_413_before_it_is_read(app: Any) -> None:
    messages: list[dict[str, Any]] = []
    read = False

    async def receive() -> dict[str, Any]:
        nonlocal read
        read = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/config/tenant-a",
        "raw_path": b"/config/tenant-a",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"52428800")],
        "client": ("127.0.0.1", 1),
        "server": ("junction.test", 80),
    }
    await app(scope, receive, send)
    assert messages[0]["status"] == 413
    assert b'"payload_too_large"' in messages[1]["body"]
    assert not read


async def test_a_streamed_body_is_refused_once_it_passes_the_limit(
    client: httpx.AsyncClient,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(50):
            sent += 1
            yield b" " * 2**20

    response = await client.post("/config/tenant-a", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert sent < 5


async def test_the_usage_batch_route_takes_a_larger_body_than_the_others(
    client: httpx.AsyncClient,
) -> None:
    body = b"[" + b" " * (2 * 2**20) + b"]"
    assert (await client.post("/config/tenant-a", content=body, headers=JSON)).status_code == 413
    # Past the size check: the anonymous caller is then refused as usual.
    assert (await client.post("/usage/openai", content=body, headers=JSON)).status_code == 401


async def test_headers_over_the_limit_are_431(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez", headers={"x-padding": "a" * 64 * 1024})
    assert response.status_code == 431
    assert response.json()["error"] == "request_header_fields_too_large"


async def test_json_nested_deeper_than_the_bound_is_422_before_authentication(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/config/tenant-a", content=_nested(40), headers=JSON)
    assert response.status_code == 422
    assert response.json()["fields"] == [
        {"field": "body", "message": "JSON nested deeper than 32 levels"}
    ]


def test_brackets_inside_json_strings_do_not_count_as_nesting() -> None:
    assert not json_depth_exceeds(b'{"a": "' + b"[" * 100 + b'", "b": ["\\"[[["]}', 3)
    assert json_depth_exceeds(b'{"a": [[[1]]]}', 3)
    assert not json_depth_exceeds(b'{"a": [[1]]}', 3)
    # An unterminated string costs one pass, not one per quote.
    assert not json_depth_exceeds(b'["\\"' * 100_000, 3)


async def test_config_data_nested_950_deep_is_a_422(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    data = '{"a":' * 950 + "1" + "}" * 950
    body = '{"map_providers":[{"provider_name":"osm","config_data":' + data + "}]}"
    response = await client.post(
        "/config/tenant-a", content=body, headers={**JSON, **bearer(make_token(roles=["admin"]))}
    )
    assert response.status_code == 422


async def test_config_data_deeper_than_its_own_bound_is_a_422_naming_the_field(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    data = '{"a":' * 12 + "1" + "}" * 12
    body = '{"map_providers":[{"provider_name":"osm","config_data":' + data + "}]}"
    response = await client.post(
        "/config/tenant-a", content=body, headers={**JSON, **bearer(make_token(roles=["admin"]))}
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "map_providers[0].config_data"


async def test_more_providers_of_one_type_than_the_bound_is_a_422(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    providers = [{"provider_name": f"p{n}"} for n in range(51)]
    response = await client.post(
        "/config/tenant-a",
        json={"map_providers": providers},
        headers=bearer(make_token(roles=["admin"])),
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "map_providers"


def test_the_storable_check_walks_a_deep_value_without_recursion() -> None:
    value: Any = "x\x00"
    for _ in range(5000):
        value = [value]
    with pytest.raises(ValueError, match="NUL"):
        check_storable(value)


# --- against a real uvicorn process, started as `junction serve` starts it -------------------


@pytest.fixture
def served(database_url: str) -> Iterator[int]:
    """`junction serve` in its own process, its port once it answers."""
    server = ReplicaServer(database_url, REDIS_URL if IS_POSTGRES else None, junction_serve=True)
    yield server.port
    server.stop()


def _exchange(port: int, request: bytes) -> bytes:
    """Send `request` (stopping if the server closes first) and read the answer's status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            for start in range(0, len(request), 2**16):
                sock.sendall(request[start : start + 2**16])
        except OSError:
            pass
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return answer.split(b"\r\n", 1)[0]


async def test_junction_serve_refuses_a_one_megabyte_header_with_431(served: int) -> None:
    request = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n"
    status = await asyncio.to_thread(_exchange, served, request)
    assert status.startswith(b"HTTP/1.1 431")


async def test_junction_serve_takes_a_head_under_the_limit_followed_by_a_body(
    served: int,
) -> None:
    body = b"[" + b" " * 300_000 + b"]"
    request = (
        b"POST /usage/openai HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Padding: " + b"a" * 20_000 + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    status = await asyncio.to_thread(_exchange, served, request)
    assert status.startswith(b"HTTP/1.1 401")  # read whole, then refused for the missing token


async def test_junction_serve_refuses_an_oversized_body_with_413(served: int) -> None:
    request = (
        b"POST /config/tenant-a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 52428800\r\n\r\n"
    )
    status = await asyncio.to_thread(_exchange, served, request)
    assert status.startswith(b"HTTP/1.1 413")

"""Security headers on every answer, no server banner, documentation pages only where wanted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter

from app.core.config import Settings
from app.core.crypto import Keyring
from tests.conftest import (
    IS_POSTGRES,
    REDIS_URL,
    TokenFactory,
    bearer,
    build_settings,
    free_port,
    running_app,
)

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)


async def test_every_kind_of_answer_carries_the_security_headers(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    token = bearer(make_token(roles=["service"]))
    answers = [
        await client.get("/livez"),  # 200
        await client.get("/config/tenant-a", headers=token),  # a hot read
        await client.get("/token-management/tokens/branch-1?provider=wix", headers=token),
        await client.get("/no-such-route"),  # 404
        await client.get("/api/admin/workspaces/tenant-a"),  # 401
        await client.delete("/livez"),  # 405
        await client.post("/config/tenant-a", headers=token, content=b"{"),  # 422
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 404, 401, 405, 422]
    for answer in answers:
        assert_security_headers(answer)


async def test_an_unexpected_error_carries_the_security_headers(settings: Settings) -> None:
    async with running_app(settings) as (app, _):
        router = APIRouter()

        @router.get("/boom")
        async def boom() -> None:
            raise RuntimeError("boom")

        app.include_router(router)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom")
    assert response.status_code == 500
    assert_security_headers(response)


_DOC_PATHS = ("/docs", "/redoc", "/openapi.json")


async def test_the_documentation_is_served_in_development(client: httpx.AsyncClient) -> None:
    for path in _DOC_PATHS:
        assert (await client.get(path)).status_code == 200, path


def _production(database_url: str, **overrides: object) -> Settings:
    return build_settings(
        database_url,
        environment="production",
        auth_jwt_secret="a-real-secret-" + "x" * 30,
        encryption_keys=Keyring.generate_key(),
        **overrides,
    )


async def test_outside_development_the_documentation_is_off_by_default(database_url: str) -> None:
    async with running_app(_production(database_url)) as (_app, client):
        answers = [await client.get(path) for path in _DOC_PATHS]
    assert [a.status_code for a in answers] == [404, 404, 404]


async def test_docs_enabled_serves_the_documentation_outside_development(
    database_url: str,
) -> None:
    async with running_app(_production(database_url, docs_enabled=True)) as (_app, client):
        answers = [await client.get(path) for path in _DOC_PATHS]
    assert [a.status_code for a in answers] == [200, 200, 200]


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[str]:
    """`junction serve` in its own process (a real uvicorn), its base URL once it answers."""
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "MONITOR_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    if IS_POSTGRES:
        env["REDIS_URL"] = REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            for _ in range(300):  # an upper bound for start-up, not a speed expectation
                assert process.poll() is None, "junction serve exited"
                try:
                    await client.get("/livez")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


async def test_junction_serve_answers_without_a_server_banner(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as client:
        response = await client.get("/livez")
    assert response.status_code == 200
    assert "server" not in response.headers
    assert_security_headers(response)

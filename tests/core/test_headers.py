"""Security headers on every answer, no server banner, documentation pages only where wanted."""

from __future__ import annotations

from collections.abc import Iterator

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
    running_app,
)
from tests.replica_server import ReplicaServer

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
def served(database_url: str) -> Iterator[str]:
    """`junction serve` in its own process (a real uvicorn), its base URL once it answers."""
    server = ReplicaServer(database_url, REDIS_URL if IS_POSTGRES else None, junction_serve=True)
    yield server.base_url
    server.stop()


async def test_junction_serve_answers_without_a_server_banner(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as client:
        response = await client.get("/livez")
    assert response.status_code == 200
    assert "server" not in response.headers
    assert_security_headers(response)

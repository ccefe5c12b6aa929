"""Factories for the usage tests: event bodies, callers' tokens, and the admin summary."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import TokenFactory, bearer

_sequence = itertools.count(1)


def event_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenant_id": "tenant-a",
        "model": "gpt-4o",
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "source": "ai_reply",
        "request_id": f"req-{next(_sequence)}",
    }
    body.update(overrides)
    return body


@pytest.fixture
def service_headers(make_token: TokenFactory) -> dict[str, str]:
    return bearer(make_token(tenants=["tenant-a"], roles=["service"], sub="backend"))


@pytest.fixture
def admin_headers(make_token: TokenFactory) -> dict[str, str]:
    return bearer(make_token(tenants=["*"], roles=["admin"], sub="ops"))


Post = Callable[..., Awaitable[httpx.Response]]
Summary = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def post_usage(client: httpx.AsyncClient, service_headers: dict[str, str]) -> Post:
    async def _post(body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return await client.post("/usage/openai", json=body, headers=headers or service_headers)

    return _post


@pytest.fixture
def summary(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> Summary:
    async def _summary(tenant_id: str = "tenant-a", **params: str) -> dict[str, Any]:
        response = await client.get(
            f"/api/admin/workspaces/{tenant_id}/usage", params=params, headers=admin_headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return _summary

"""Factories for the provider_configs tests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import TokenFactory, bearer

TENANT = "tenant-a"


def provider(name: str = "google", **fields: Any) -> dict[str, Any]:
    return {"provider_name": name, **fields}


async def post_config(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    tenant_id: str = TENANT,
    **lists: list[dict[str, Any]],
) -> httpx.Response:
    body: dict[str, Any] = {}
    reason = lists.pop("change_reason", None)
    for provider_type, providers in lists.items():
        body[f"{provider_type}_providers"] = providers
    if reason is not None:
        body["change_reason"] = reason
    return await client.post(f"/config/{tenant_id}", json=body, headers=headers)


async def history(
    client: httpx.AsyncClient, headers: dict[str, str], tenant_id: str = TENANT, **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(f"/config/{tenant_id}/history", params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def find(document: dict[str, Any], provider_type: str, name: str) -> dict[str, Any]:
    matches = [p for p in document[f"{provider_type}_providers"] if p["provider_name"] == name]
    assert len(matches) == 1, document
    return matches[0]


@pytest.fixture
def editor(make_token: TokenFactory) -> dict[str, str]:
    # Writing a configuration (API keys among it) needs the service or admin role.
    return bearer(make_token(tenants=[TENANT], roles=["service"], sub="alice"))


@pytest.fixture
def member(make_token: TokenFactory) -> dict[str, str]:
    """A member of the tenant without a role: reads configurations, secrets masked."""
    return bearer(make_token(tenants=[TENANT], sub="bob"))


@pytest.fixture
def service_caller(make_token: TokenFactory) -> dict[str, str]:
    return bearer(make_token(tenants=[TENANT], roles=["service"], sub="billing-backend"))

"""Workspaces: created on first use, edited by admins."""

from __future__ import annotations

import httpx

from tests.conftest import TokenFactory, bearer


async def test_a_workspace_is_created_on_first_use_with_the_free_tier(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.get(
        "/api/admin/workspaces/tenant-a", headers=bearer(make_token(roles=["admin"]))
    )
    assert response.status_code == 200
    assert response.json()["tenant_id"] == "tenant-a"
    assert response.json()["tier"] == "free"


async def test_an_admin_renames_and_retiers_a_workspace(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(roles=["admin"]))
    updated = await client.put(
        "/api/admin/workspaces/tenant-a", headers=headers, json={"name": "Acme", "tier": "pro"}
    )
    assert updated.status_code == 200
    read = await client.get("/api/admin/workspaces/tenant-a", headers=headers)
    assert read.json()["name"] == "Acme"
    assert read.json()["tier"] == "pro"


async def test_an_unknown_tier_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(roles=["admin"]))
    refused = await client.put(
        "/api/admin/workspaces/tenant-a", headers=headers, json={"tier": "platinum"}
    )
    assert refused.status_code == 422
    assert "tier" in refused.json()["detail"]
    read = await client.get("/api/admin/workspaces/tenant-a", headers=headers)
    assert read.json()["tier"] == "free"


async def test_a_non_admin_cannot_edit_a_workspace(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.put(
        "/api/admin/workspaces/tenant-a",
        headers=bearer(make_token(roles=["service"])),
        json={"tier": "enterprise"},
    )
    assert response.status_code == 403

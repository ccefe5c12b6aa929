"""Workspaces: created by a write or PUT (never by a read), listed and edited by admins."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import TokenFactory, bearer


async def test_an_unknown_workspace_is_404_and_reading_it_creates_nothing(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(roles=["admin"]))
    first = await client.get("/api/admin/workspaces/tenant-a", headers=headers)
    assert first.status_code == 404
    assert first.json()["error"] == "workspace_not_found"
    again = await client.get("/api/admin/workspaces/tenant-a", headers=headers)
    assert again.status_code == 404
    listed = await client.get("/api/admin/workspaces", headers=bearer(make_token(["*"], ["admin"])))
    assert listed.json()["items"] == []


async def test_put_creates_a_workspace_with_the_free_tier(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(roles=["admin"]))
    created = await client.put("/api/admin/workspaces/tenant-a", headers=headers, json={})
    assert created.status_code == 200
    read = await client.get("/api/admin/workspaces/tenant-a", headers=headers)
    assert read.status_code == 200
    assert read.json()["tenant_id"] == "tenant-a"
    assert read.json()["tier"] == "free"


async def test_a_write_elsewhere_creates_the_workspace(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    service = bearer(make_token(roles=["service"]))
    written = await client.post(
        "/config/tenant-a", json={"map_providers": [{"provider_name": "osm"}]}, headers=service
    )
    assert written.status_code == 200, written.text
    read = await client.get(
        "/api/admin/workspaces/tenant-a", headers=bearer(make_token(roles=["admin"]))
    )
    assert read.status_code == 200


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
    await client.put("/api/admin/workspaces/tenant-a", headers=headers, json={})
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


async def _create(
    client: httpx.AsyncClient, headers: dict[str, str], tenant: str, tier: str
) -> None:
    response = await client.put(
        f"/api/admin/workspaces/{tenant}", headers=headers, json={"tier": tier}
    )
    assert response.status_code == 200, response.text


async def _all_pages(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await client.get(
            "/api/admin/workspaces",
            headers=headers,
            params={**params, **({"cursor": cursor} if cursor else {})},
        )
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


async def test_the_list_pages_through_every_workspace_newest_first(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(["*"], ["admin"]))
    for number in range(5):
        await _create(client, headers, f"tenant-{number}", "free")
    items = await _all_pages(client, headers, limit=2)
    assert [item["tenant_id"] for item in items] == [f"tenant-{n}" for n in (4, 3, 2, 1, 0)]


async def test_the_list_filters_by_tier(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(["*"], ["admin"]))
    await _create(client, headers, "tenant-free", "free")
    await _create(client, headers, "tenant-pro", "pro")
    items = await _all_pages(client, headers, tier="pro")
    assert [item["tenant_id"] for item in items] == ["tenant-pro"]
    unknown = await client.get("/api/admin/workspaces", headers=headers, params={"tier": "gold"})
    assert unknown.status_code == 422


async def test_the_list_needs_an_admin_of_every_tenant(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    tenant_admin = bearer(make_token(["tenant-a"], ["admin"]))
    assert (await client.get("/api/admin/workspaces", headers=tenant_admin)).status_code == 403


async def test_a_cursor_not_from_the_list_is_a_clear_400(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(["*"], ["admin"]))
    response = await client.get("/api/admin/workspaces", headers=headers, params={"cursor": "x!"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cursor"

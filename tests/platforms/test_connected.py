"""GET /platforms/connected: per-provider status of a branch, or per-provider counts."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import bearer
from tests.monitoring.factories import make_client, make_connection


async def connected(client: httpx.AsyncClient, token: str, **params: str) -> dict[str, Any]:
    response = await client.get("/platforms/connected", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_provider(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["provider"]: entry for entry in body["platforms"]}


async def test_every_provider_with_a_client_is_listed_once(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    gsc = await make_client(app, provider="google_search_console")
    await make_client(app, provider="google_search_console")  # a second app, same provider
    await make_client(app, provider="wix")
    await make_connection(app, gsc, branch_id="shop-1")
    body = await connected(client, make_token(), branch_id="shop-1")
    assert body["tenant_id"] == "tenant-a" and body["branch_id"] == "shop-1"
    platforms = by_provider(body)
    assert sorted(platforms) == ["google_search_console", "wix"]
    assert platforms["google_search_console"]["connected"] is True
    assert platforms["google_search_console"]["status"] == "active"


async def test_a_provider_without_a_connection_is_disconnected(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    await make_client(app, provider="wix")
    entry = by_provider(await connected(client, make_token(), branch_id="shop-1"))["wix"]
    assert entry == {
        "provider": "wix",
        "connected": False,
        "status": "disconnected",
        "expires_at": None,
        "last_refreshed_at": None,
        "last_error": None,
        "refresh_token_expires_at": None,
        "refresh_token_expiring": False,
    }


async def test_another_branchs_connection_does_not_count(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    wix = await make_client(app, provider="wix")
    await make_connection(app, wix, branch_id="shop-2")
    entry = by_provider(await connected(client, make_token(), branch_id="shop-1"))["wix"]
    assert entry["status"] == "disconnected"


async def test_a_token_inside_its_providers_margin_is_expiring(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    # Wix refreshes 60 s before expiry, Google 300 s: 120 s left is expiring for Google only.
    gsc = await make_client(app, provider="google_search_console")
    wix = await make_client(app, provider="wix")
    await make_connection(app, gsc, expires_in_s=120)
    await make_connection(app, wix, expires_in_s=120)
    platforms = by_provider(await connected(client, make_token(), branch_id="branch-1"))
    assert platforms["google_search_console"]["status"] == "expiring"
    assert platforms["wix"]["status"] == "active"


async def test_a_custom_providers_own_margin_is_used(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    custom = await make_client(
        app,
        provider="acme_crm",
        provider_settings={
            "authorization_url": "https://acme.example/authorize",
            "token_url": "https://acme.example/token",
            "refresh_margin_s": 1800,
        },
    )
    await make_connection(app, custom, expires_in_s=1200)
    entry = by_provider(await connected(client, make_token(), branch_id="branch-1"))["acme_crm"]
    assert entry["status"] == "expiring"


async def test_a_token_past_its_expiry_is_expired(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    wix = await make_client(app, provider="wix")
    await make_connection(app, wix, expires_in_s=-10)
    entry = by_provider(await connected(client, make_token(), branch_id="branch-1"))["wix"]
    assert entry["status"] == "expired"
    assert entry["connected"] is True


async def test_a_token_that_never_expires_is_active(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    wordpress = await make_client(app, provider="wordpress")
    await make_connection(app, wordpress, expires_in_s=None, refresh_due_in_s=None)
    entry = by_provider(await connected(client, make_token(), branch_id="branch-1"))["wordpress"]
    assert (entry["status"], entry["expires_at"]) == ("active", None)


async def test_a_stored_failure_is_reported_with_its_error(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    wix = await make_client(app, provider="wix")
    await make_connection(
        app, wix, status="needs_reauth", expires_in_s=-10, last_error="invalid_grant"
    )
    entry = by_provider(await connected(client, make_token(), branch_id="branch-1"))["wix"]
    assert (entry["status"], entry["connected"], entry["last_error"]) == (
        "needs_reauth",
        False,
        "invalid_grant",
    )


async def test_without_a_branch_connections_are_counted_by_status(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    gsc = await make_client(app, provider="google_search_console")
    await make_client(app, provider="wix")
    await make_connection(app, gsc, branch_id="a")
    await make_connection(app, gsc, branch_id="b")
    await make_connection(app, gsc, branch_id="c", expires_in_s=60)
    await make_connection(app, gsc, branch_id="d", status="refresh_failed")
    body = await connected(client, make_token())
    assert body["branch_id"] is None
    platforms = by_provider(body)
    assert platforms["google_search_console"]["connections"] == 4
    assert platforms["google_search_console"]["statuses"] == {
        "active": 2,
        "expiring": 1,
        "expired": 0,
        "refresh_failed": 1,
        "needs_reauth": 0,
    }
    assert platforms["wix"]["connections"] == 0


async def test_other_tenants_connections_are_not_counted(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    await make_client(app, provider="wix")
    theirs = await make_client(app, tenant_id="tenant-b", provider="wix")
    await make_connection(app, theirs, branch_id="branch-1")
    body = await connected(client, make_token(), branch_id="branch-1")
    assert by_provider(body)["wix"]["status"] == "disconnected"


async def test_a_tenant_the_caller_lacks_is_forbidden(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/platforms/connected", params={"tenant_id": "tenant-b"}, headers=bearer(make_token())
    )
    assert response.status_code == 403


async def test_a_token_with_several_tenants_must_name_one(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    token = make_token(tenants=["tenant-a", "tenant-b"])
    response = await client.get("/platforms/connected", headers=bearer(token))
    assert response.status_code == 400


async def test_a_tenant_without_clients_has_no_platforms(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    body = await connected(client, make_token(), branch_id="branch-1")
    assert body["platforms"] == []


async def test_a_nul_character_in_branch_id_is_a_422(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/platforms/connected",
        params={"branch_id": "b\x00"},
        headers=bearer(make_token(roles=["service"])),
    )
    assert response.status_code == 422

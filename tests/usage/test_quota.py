"""GET /usage/{tenant_id}/quota: limits, used and remaining for the current month."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from tests.conftest import TokenFactory, bearer, build_settings, running_app
from tests.usage.conftest import Post, event_body


async def _quota(
    client: httpx.AsyncClient, headers: dict[str, str], tenant_id: str = "tenant-a"
) -> httpx.Response:
    return await client.get(f"/usage/{tenant_id}/quota", headers=headers)


async def test_quota_of_a_new_tenant_is_the_free_tier_untouched(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await _quota(client, bearer(make_token(tenants=["tenant-a"])))
    assert response.status_code == 200
    body = response.json()
    assert body["tenant_id"] == "tenant-a"
    assert body["tier"] == "free"
    assert body["limits"] == {"tokens": 100_000, "calls": 1_000}
    assert body["used"] == {"tokens": 0, "calls": 0}
    assert body["remaining"] == {"tokens": 100_000, "calls": 1_000}
    assert body["exceeded"] is False


async def test_quota_counts_recorded_events(
    client: httpx.AsyncClient, post_usage: Post, make_token: TokenFactory
) -> None:
    await post_usage([event_body(prompt_tokens=100, completion_tokens=20) for _ in range(3)])
    body = (await _quota(client, bearer(make_token(tenants=["tenant-a"])))).json()
    assert body["used"] == {"tokens": 360, "calls": 3}
    assert body["remaining"] == {"tokens": 99_640, "calls": 997}


async def test_remaining_stops_at_zero_and_exceeded_is_set(
    client: httpx.AsyncClient, post_usage: Post, make_token: TokenFactory
) -> None:
    await post_usage(event_body(prompt_tokens=100_000, completion_tokens=5))
    body = (await _quota(client, bearer(make_token(tenants=["tenant-a"])))).json()
    assert body["remaining"]["tokens"] == 0
    assert body["exceeded"] is True


async def test_quota_resets_at_the_start_of_next_month(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    body = (await _quota(client, bearer(make_token(tenants=["tenant-a"])))).json()
    resets_at = datetime.fromisoformat(body["resets_at"])
    now = datetime.now(UTC)
    assert resets_at > now
    assert (resets_at.day, resets_at.hour, resets_at.minute) == (1, 0, 0)
    assert body["period"] == now.strftime("%Y-%m")


async def test_quota_follows_the_tier_an_admin_sets(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    admin = bearer(make_token(tenants=["*"], roles=["admin"]))
    await client.put("/api/admin/workspaces/tenant-a", json={"tier": "enterprise"}, headers=admin)
    body = (await _quota(client, bearer(make_token(tenants=["tenant-a"])))).json()
    assert body["tier"] == "enterprise"
    assert body["limits"] == {"tokens": 100_000_000, "calls": 1_000_000}


async def test_tier_limits_from_settings_override_the_defaults(
    database_url: str, make_token: TokenFactory
) -> None:
    settings = build_settings(database_url, usage_tier_limits={"free": {"tokens": 50}})
    async with running_app(settings) as (_, client):
        body = (await _quota(client, bearer(make_token(tenants=["tenant-a"])))).json()
    assert body["limits"] == {"tokens": 50, "calls": 1_000}


async def test_quota_of_another_tenant_is_forbidden(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await _quota(client, bearer(make_token(tenants=["tenant-a"])), "tenant-b")
    assert response.status_code == 403


async def test_quota_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/usage/tenant-a/quota")).status_code == 401

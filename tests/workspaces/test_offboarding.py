"""Offboarding a tenant: its grants revoked at the provider, its rows gone in one transaction,
its cached reads gone on the way, another tenant untouched, and a record that outlives it."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from app.core.config import Settings
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.workspaces import offboarding
from tests.conftest import TokenFactory, bearer, postgres_only, running_app
from tests.oauth_fixtures import connect_branch
from tests.tokens.helpers import read_token

CONFIG = {"map_providers": [{"provider_name": "osm", "api_key": "osm-key-0123456789"}]}
USAGE = {
    "model": "gpt-4o-mini",
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "source": "offboarding",
}


async def _populate(
    client: httpx.AsyncClient, make_token: TokenFactory, server: LocalOAuthServer, tenant: str
) -> str:
    """A connected branch, a configuration, a usage event and a webhook; the access token."""
    service = make_token([tenant], roles=["service"])
    await connect_branch(client, service, server, "branch-1")
    written = await client.post(f"/config/{tenant}", json=CONFIG, headers=bearer(service))
    assert written.status_code == 200, written.text
    usage = await client.post(
        "/usage/openai", json={**USAGE, "tenant_id": tenant}, headers=bearer(service)
    )
    assert usage.status_code in {200, 201}, usage.text
    hook = await client.put(
        "/monitoring/webhook", json={"url": "http://127.0.0.1:9/hooks"}, headers=bearer(service)
    )
    assert hook.status_code == 200, hook.text
    token = await read_token(client, service)
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


async def _rows_of(app: Any, tenant: str) -> dict[str, int]:
    async with app_state(app).sessionmaker() as session:
        return {
            table.name: int(
                await session.scalar(
                    select(func.count()).select_from(table).where(table.c.tenant_id == tenant)
                )
                or 0
            )
            for table in offboarding.tenant_tables()
        }


async def test_offboarding_revokes_at_the_provider_and_deletes_every_row_of_the_tenant(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    token_a = await _populate(client, make_token, oauth_server, "tenant-a")
    token_b = await _populate(client, make_token, oauth_server, "tenant-b")
    before_b = await _rows_of(app, "tenant-b")
    admin = bearer(make_token(["tenant-a"], roles=["admin"], sub="offboarder"))

    response = await client.delete("/api/admin/workspaces/tenant-a", headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tenant_id"] == "tenant-a"
    assert body["deleted_by"] == "offboarder"
    assert body["revocations"] == {
        "connections": 1,
        "attempted": 1,
        "revoked": 1,
        "failed": 0,
        "timed_out": 0,
    }
    counts = body["counts"]
    for table in ("oauth_clients", "oauth_connections", "provider_configs", "workspaces"):
        assert counts[table] == 1, counts
    assert counts["usage_events"] == 1
    assert counts["monitoring_webhooks"] == 1
    assert counts["provider_config_versions"] >= 1
    # The revocation reached the provider; the other tenant's grant is still good.
    assert oauth_server.calls["revoke"] == 1
    assert not oauth_server.is_access_token_valid(token_a)
    assert oauth_server.is_access_token_valid(token_b)
    assert set((await _rows_of(app, "tenant-a")).values()) == {0}
    assert await _rows_of(app, "tenant-b") == before_b


async def test_after_offboarding_no_cached_read_serves_the_tenant(
    client: httpx.AsyncClient, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(client, make_token, oauth_server, "tenant-a")
    service = make_token(["tenant-a"], roles=["service"])
    # Both reads cached now (the document and the fresh-token row).
    assert (await client.get("/config/tenant-a", headers=bearer(service))).json()[
        "source"
    ] == "tenant"
    assert (await read_token(client, service)).status_code == 200

    admin = bearer(make_token(["tenant-a"], roles=["admin"]))
    assert (await client.delete("/api/admin/workspaces/tenant-a", headers=admin)).status_code == 200

    document = await client.get("/config/tenant-a", headers=bearer(service))
    assert document.json()["source"] == "default"
    assert (await read_token(client, service)).status_code == 404
    gone = await client.get("/api/admin/workspaces/tenant-a", headers=admin)
    assert gone.status_code == 404


async def test_the_deletion_record_outlives_the_tenant(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    admin = bearer(make_token(["tenant-a"], roles=["admin"], sub="ops-1"))
    await client.put("/api/admin/workspaces/tenant-a", headers=admin, json={"tier": "pro"})
    deleted = await client.delete("/api/admin/workspaces/tenant-a", headers=admin)
    assert deleted.status_code == 200
    operator = bearer(make_token(["*"], roles=["admin"]))
    records = await client.get("/api/admin/workspace-deletions", headers=operator)
    assert records.status_code == 200
    [record] = records.json()["items"]
    assert record["tenant_id"] == "tenant-a"
    assert record["tier"] == "pro"
    assert record["deleted_by"] == "ops-1"
    assert record["counts"]["workspaces"] == 1
    assert record == deleted.json()
    # A new workspace of the same id starts afresh; the record stays.
    await client.put("/api/admin/workspaces/tenant-a", headers=admin, json={})
    again = await client.get(
        "/api/admin/workspace-deletions", headers=operator, params={"tenant_id": "tenant-a"}
    )
    assert len(again.json()["items"]) == 1


async def test_offboarding_an_unknown_tenant_is_404_and_records_nothing(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    admin = bearer(make_token(["*"], roles=["admin"]))
    response = await client.delete("/api/admin/workspaces/nobody", headers=admin)
    assert response.status_code == 404
    records = await client.get("/api/admin/workspace-deletions", headers=admin)
    assert records.json()["items"] == []


async def test_an_admin_of_another_tenant_cannot_offboard_it(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    owner = bearer(make_token(["tenant-a"], roles=["admin"]))
    await client.put("/api/admin/workspaces/tenant-a", headers=owner, json={})
    other = bearer(make_token(["tenant-b"], roles=["admin"]))
    assert (await client.delete("/api/admin/workspaces/tenant-a", headers=other)).status_code == 403
    assert (await client.get("/api/admin/workspaces/tenant-a", headers=owner)).status_code == 200


async def test_a_provider_that_does_not_answer_in_time_does_not_hold_the_offboarding(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(client, make_token, oauth_server, "tenant-a")
    oauth_server.revoke_delay_s = 3.0
    state = app_state(app)
    async with state.sessionmaker() as session:
        record = await offboarding.offboard(
            session,
            state.tokens,
            state.provider_configs,
            "tenant-a",
            deleted_by="ops",
            revoke_budget_s=0.2,
        )
        await session.commit()
    assert record.revocations["timed_out"] == 1
    assert record.revocations["revoked"] == 0
    assert set((await _rows_of(app, "tenant-a")).values()) == {0}


@postgres_only
async def test_after_offboarding_through_one_replica_another_serves_nothing_of_the_tenant(
    settings: Settings, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    service = make_token(["tenant-a"], roles=["service"])
    admin = bearer(make_token(["tenant-a"], roles=["admin"]))
    async with running_app(settings) as (_, writer), running_app(settings) as (_, reader):
        await _populate(writer, make_token, oauth_server, "tenant-a")
        # The reader holds both in process memory now.
        for _ in range(2):
            document = await reader.get("/config/tenant-a", headers=bearer(service))
            assert document.json()["source"] == "tenant"
            assert (await read_token(reader, service)).status_code == 200
        deleted = await writer.delete("/api/admin/workspaces/tenant-a", headers=admin)
        assert deleted.status_code == 200
        document = await reader.get("/config/tenant-a", headers=bearer(service))
        assert document.json()["source"] == "default"
        assert (await read_token(reader, service)).status_code == 404

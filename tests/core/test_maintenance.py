"""MAINTENANCE_MODE=read_only: reads work, every write answers 503, nothing reaches the database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update

from app.core.auth import mint_token
from app.core.config import Settings
from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.operations import databases
from app.operations.checksum import sum_table
from app.state import app_state
from app.tokens.models import OAuthConnection
from tests.conftest import bearer, build_settings, running_app
from tests.oauth_fixtures import connect_branch, follow_authorization
from tests.provider_configs.conftest import post_config, provider
from tests.tokens.helpers import read_token

TENANT = "tenant-a"


async def _everything(url: str) -> dict[str, tuple[int, str]]:
    """Rows and checksum of every table: equal before and after means nothing was written."""
    database = databases.open_database(url, must_exist=True)
    try:
        async with databases.snapshot(database) as conn:
            sums = {}
            for table in databases.copied_tables():
                table_sum = await sum_table(conn, table, label=table.name)
                sums[table.name] = (table_sum.rows, table_sum.checksum)
            return sums
    finally:
        await database.dispose()


async def _expire(app: Any, branch_id: str, seconds_from_now: float) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(OAuthConnection)
            .where(OAuthConnection.branch_id == branch_id)
            .values(expires_at=utcnow() + timedelta(seconds=seconds_from_now))
        )


def _is_maintenance(response: httpx.Response) -> bool:
    return (
        response.status_code == 503
        and response.json()["error"] == "maintenance"
        and int(response.headers["Retry-After"]) == 60
    )


async def test_read_only_serves_reads_refuses_every_write_and_writes_nothing(
    database_url: str, settings: Settings, oauth_server: LocalOAuthServer
) -> None:
    token = mint_token(settings, sub="ops", tenants=[TENANT], roles=["service", "admin"])
    headers = bearer(token)
    async with running_app(settings) as (app, client):
        first = await connect_branch(client, token, oauth_server, "in-margin")
        await connect_branch(client, token, oauth_server, "expired", client_pk=first["client_pk"])
        assert (await post_config(client, headers, map=[provider("osm")])).status_code == 200
        await client.get(f"/api/admin/workspaces/{TENANT}", headers=headers)
        # A login started before the maintenance, its callback arriving during it.
        login = await client.get(
            f"/token-management/oauth/login/{first['client_pk']}",
            params={"branch_id": "late"},
            headers=headers,
        )
        callback = urlsplit(await follow_authorization(login.json()["authorization_url"]))
        # Within the provider's margin but still valid; and past its expiry.
        await _expire(app, "in-margin", 30)
        await _expire(app, "expired", -10)
    before = await _everything(database_url)
    refreshes = oauth_server.refresh_calls

    read_only = build_settings(database_url, maintenance_mode="read_only", monitor_enabled=True)
    async with running_app(read_only) as (_app, client):
        health = (await client.get("/api/v1/health")).json()
        assert health["checks"]["maintenance"] == "read_only"
        assert health["checks"]["monitor"] == "paused"
        for path in (
            f"/config/{TENANT}",
            f"/config/{TENANT}/history",
            f"/api/admin/workspaces/{TENANT}",
            f"/usage/{TENANT}/quota",
            "/platforms/connected",
            "/monitoring/events",
            "/token-management/clients",
        ):
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
        # A token that still works is served, not refreshed.
        assert (await read_token(client, token, "in-margin")).status_code == 200

        writes = [
            await post_config(client, headers, map=[provider("other")]),
            await client.put(
                f"/api/admin/workspaces/{TENANT}", json={"tier": "pro"}, headers=headers
            ),
            await client.post("/usage/openai", json=[], headers=headers),
            await client.post("/auth/revoke", headers=headers),
            await client.delete("/token-management/tokens/in-margin", headers=headers),
            # GETs that would write: an expired token's refresh, a login's state, its callback.
            await read_token(client, token, "expired"),
            await client.get(
                f"/token-management/oauth/login/{first['client_pk']}",
                params={"branch_id": "new"},
                headers=headers,
            ),
            await client.get(f"{callback.path}?{callback.query}"),
        ]
        assert [w.status_code for w in writes if not _is_maintenance(w)] == []
    assert oauth_server.refresh_calls == refreshes
    assert await _everything(database_url) == before

    # Out of maintenance, the login whose callback was refused completes.
    async with running_app(settings) as (_app, client):
        completed = await client.get(f"{callback.path}?{callback.query}")
        assert completed.status_code == 200, completed.text


async def test_maintenance_is_off_by_default_and_health_says_so(
    client: httpx.AsyncClient,
) -> None:
    health = (await client.get("/api/v1/health")).json()
    assert health["checks"]["maintenance"] == "off"
    assert health["status"] == "ok"


def test_an_unknown_maintenance_mode_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="maintenance_mode"):
        Settings(maintenance_mode="half", _env_file=None)  # type: ignore[arg-type]

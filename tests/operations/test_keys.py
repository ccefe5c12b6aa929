"""`junction keys status|rewrap`: every encrypted column found through its one owner, rotation
by rewrap (the app still reads everything afterwards under the new key alone), compare-and-set
against concurrent writers, and health's count of secrets no key opens."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import pytest
from sqlalchemy import Text, select, update

from app.cli import main
from app.core.crypto import Keyring
from app.core.secret_fields import registered_fields, registered_snapshots
from app.devtools.oauth_provider import LocalOAuthServer
from app.models import Base
from app.operations import keys
from app.operations.engine import command_engine
from app.tokens.models import OAuthConnection
from tests.conftest import TokenFactory, bearer, build_settings, running_app
from tests.oauth_fixtures import connect_branch
from tests.tokens.helpers import read_token

OLD = f"old:{Keyring.generate_key()}"
NEW = f"new:{Keyring.generate_key()}"
ROTATED = f"{NEW},{OLD}"  # the new key first: it encrypts, both decrypt
TENANT = "tenant-a"

# A Standard Webhooks secret (whsec_ and the base64 of 30 bytes) whose mask ends in "cdef".
WEBHOOK_SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhcdef"


async def _populate(
    database_url: str, make_token: TokenFactory, server: LocalOAuthServer, encryption_keys: str
) -> dict[str, Any]:
    """A connection, a configuration with two versions, a webhook: one of each secret."""
    settings = build_settings(database_url, encryption_keys=encryption_keys)
    service = bearer(make_token([TENANT], roles=["service"]))
    async with running_app(settings) as (_, client):
        await connect_branch(client, make_token([TENANT], roles=["service"]), server)
        first = await client.post(
            f"/config/{TENANT}",
            json={"map_providers": [{"provider_name": "osm", "api_key": "first-key-0123456789"}]},
            headers=service,
        )
        assert first.status_code == 200, first.text
        config_id = first.json()["map_providers"][0]["id"]
        second = await client.post(
            f"/config/{TENANT}",
            json={"map_providers": [{"provider_name": "osm", "api_key": "second-key-987654321"}]},
            headers=service,
        )
        assert second.status_code == 200, second.text
        hook = await client.put(
            "/monitoring/webhook",
            json={"url": "http://127.0.0.1:9/hooks", "secret": WEBHOOK_SECRET},
            headers=service,
        )
        assert hook.status_code == 200, hook.text
    return {"config_id": config_id}


def _rows_by_key(counts: list[keys.KeyCount]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for count in counts:
        totals[count.key_id] = totals.get(count.key_id, 0) + count.rows
    return totals


def test_every_ciphertext_column_of_the_schema_has_an_owner() -> None:
    keys.locations()  # loads the domains that define the fields
    owned = {(f.table, f.encrypted) for f in registered_fields()}
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, Text) and column.name.endswith(("_enc", "_encrypted")):
                assert (table.name, column.name) in owned, f"{table.name}.{column.name}"
    assert {s.label for s in registered_snapshots()} == {
        "provider_config_versions.snapshot.api_key_encrypted",
        "provider_config_versions.snapshot.api_secret_encrypted",
    }


async def test_rewrap_moves_everything_under_the_new_key_and_the_app_still_reads_it(
    database_url: str, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    made = await _populate(database_url, make_token, oauth_server, OLD)
    rotated = build_settings(database_url, encryption_keys=ROTATED)
    keyring = Keyring(rotated.encryption_keys)
    async with command_engine(rotated) as engine:
        before = _rows_by_key(await keys.status(engine, keyring))
        assert set(before) == {"old"}
        # access, refresh, client secret, webhook, api_key, and api_key in two snapshots
        assert before["old"] >= 7
        out = io.StringIO()
        assert await keys.rewrap_command(engine, keyring, out, batch_size=2) == 0
        after = await keys.status(engine, keyring)
        assert _rows_by_key(after) == {"new": before["old"]}
        assert all(count.primary for count in after)

    new_only = build_settings(database_url, encryption_keys=NEW)
    service = make_token([TENANT], roles=["service"])
    async with running_app(new_only) as (_, client):
        token = await read_token(client, service)
        assert token.status_code == 200, token.text
        refreshed = await client.post(
            "/token-management/tokens/refresh",
            json={"provider": "local_oauth", "branch_id": "branch-1"},
            headers=bearer(service),
        )
        assert refreshed.status_code == 200, refreshed.text  # refresh token and client secret
        revealed = await client.get(
            f"/config/{TENANT}", params={"include_secrets": "true"}, headers=bearer(service)
        )
        assert revealed.json()["map_providers"][0]["api_key"] == "second-key-987654321"
        rolled = await client.post(
            f"/config/{TENANT}/rollback",
            json={"config_id": made["config_id"], "version": 1, "reason": "after the rewrap"},
            headers=bearer(service),
        )
        assert rolled.status_code == 200, rolled.text
        revealed = await client.get(
            f"/config/{TENANT}", params={"include_secrets": "true"}, headers=bearer(service)
        )
        assert revealed.json()["map_providers"][0]["api_key"] == "first-key-0123456789"
        hook = await client.get("/monitoring/webhook", headers=bearer(service))
        assert hook.json()["secret"].endswith("cdef")


async def test_a_second_rewrap_touches_only_values_not_under_the_primary_key(
    database_url: str, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(database_url, make_token, oauth_server, OLD)
    keyring = Keyring(ROTATED)
    settings = build_settings(database_url, encryption_keys=ROTATED)
    async with command_engine(settings) as engine:
        first = await keys.rewrap(engine, keyring)
        second = await keys.rewrap(engine, keyring)
    assert sum(r.rewrapped for r in first) >= 7
    assert sum(r.rewrapped for r in second) == 0


async def test_a_value_written_between_the_read_and_the_update_is_not_overwritten(
    database_url: str, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(database_url, make_token, oauth_server, OLD)
    keyring = Keyring(ROTATED)
    settings = build_settings(database_url, encryption_keys=ROTATED)
    [location] = [
        found for found in keys.locations() if found.label == "oauth_connections.access_token_enc"
    ]
    async with command_engine(settings) as engine:
        async with engine.begin() as conn:
            [row] = await keys._next_batch(conn, keyring, location, None, 10)
        # A refresh commits a new token (under the primary key) in between.
        aad = location.aad(row.tenant_id, row.row_id)
        concurrent = keyring.encrypt("a-newer-access-token", aad)
        async with engine.begin() as conn:
            await conn.execute(
                update(OAuthConnection.__table__).values(access_token_enc=concurrent)
            )
        result = keys.RewrapResult(location.label)
        async with engine.begin() as conn:
            await keys._rewrap_row(conn, keyring, location, row, result)
        async with engine.connect() as conn:
            stored = await conn.scalar(select(OAuthConnection.access_token_enc))
    assert (result.rewrapped, result.changed) == (0, 1)
    assert stored == concurrent


async def test_secrets_under_a_key_no_longer_configured_degrade_health_with_a_count(
    database_url: str, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(database_url, make_token, oauth_server, OLD)
    settings = build_settings(database_url, encryption_keys=NEW)
    async with running_app(settings) as (_, client):
        health: dict[str, Any] = {}
        for _ in range(200):  # the first health request starts the count
            health = (await client.get("/api/v1/health")).json()
            if health["checks"]["keys"] != "counting":
                break
            await asyncio.sleep(0.05)
        assert health["status"] == "degraded"
        assert health["checks"]["keys"] == "unknown_keys"
        assert health["checks"]["secrets_under_unknown_keys"] >= 7


async def test_a_refresh_of_a_connection_under_an_unknown_key_fails_with_that_reason(
    database_url: str, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(database_url, make_token, oauth_server, OLD)
    settings = build_settings(database_url, encryption_keys=NEW)
    service = make_token([TENANT], roles=["service"])
    async with running_app(settings) as (_, client):
        refreshed = await client.post(
            "/token-management/tokens/refresh",
            json={"provider": "local_oauth", "branch_id": "branch-1"},
            headers=bearer(service),
        )
    assert refreshed.status_code == 503
    body = refreshed.json()
    assert body["reason"] == "unknown_encryption_key"
    assert "ENCRYPTION_KEYS" in body["detail"]
    assert oauth_server.refresh_calls == 0


async def test_health_says_ok_when_every_key_is_configured(client: httpx.AsyncClient) -> None:
    for _ in range(200):
        health = (await client.get("/api/v1/health")).json()
        if health["checks"]["keys"] != "counting":
            break
        await asyncio.sleep(0.05)
    assert health["checks"]["keys"] == "ok"
    assert health["status"] == "ok"


def test_the_status_command_runs_from_the_cli(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ENCRYPTION_KEYS", NEW)
    assert main(["keys", "status"]) == 0
    assert "total: 0 under the primary key" in capsys.readouterr().out


async def test_a_rewrap_during_a_refresh_loses_no_rotated_refresh_token(
    database_url: str, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(database_url, make_token, oauth_server, OLD)
    settings = build_settings(database_url, encryption_keys=ROTATED)
    service = bearer(make_token([TENANT], roles=["service"]))
    body = {"provider": "local_oauth", "branch_id": "branch-1"}
    async with running_app(settings) as (_, client), command_engine(settings) as engine:
        oauth_server.delay_s = 1.0
        calls_before = oauth_server.calls["token"]
        refresh = asyncio.create_task(
            client.post("/token-management/tokens/refresh", json=body, headers=service)
        )
        while oauth_server.calls["token"] == calls_before:  # the provider has the request
            await asyncio.sleep(0.01)
        await keys.rewrap(engine, Keyring(ROTATED))
        assert (await refresh).status_code == 200
        oauth_server.delay_s = 0.0
        # The rotated refresh token was stored: the next refresh is not a reuse (which the
        # provider answers by revoking the grant).
        again = await client.post("/token-management/tokens/refresh", json=body, headers=service)
        assert again.status_code == 200, again.text
        assert oauth_server.active_grants()

"""`junction reset`: all data gone but the workspaces and their tiers (`--all`: those too), the
caches forgotten, confirmation asked, refused outside ENVIRONMENT=dev without --force."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.cli import main
from app.core.crypto import Keyring
from app.devtools.oauth_provider import LocalOAuthServer
from app.operations import reset
from app.provider_configs.models import ProviderConfig
from app.state import app_state
from tests.conftest import TokenFactory, bearer
from tests.oauth_fixtures import connect_branch

CONFIG = {"map_providers": [{"provider_name": "osm", "api_key": "osm-key-0123456789"}]}


async def _populate(
    client: httpx.AsyncClient, make_token: TokenFactory, server: LocalOAuthServer
) -> None:
    service = make_token(["tenant-a"], roles=["service"])
    await connect_branch(client, service, server)
    assert (await client.post("/config/tenant-a", json=CONFIG, headers=bearer(service))).is_success
    admin = bearer(make_token(["tenant-a"], roles=["admin"]))
    put = await client.put("/api/admin/workspaces/tenant-a", headers=admin, json={"tier": "pro"})
    assert put.status_code == 200


async def test_a_reset_keeps_the_workspaces_and_their_tiers_and_forgets_cached_reads(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(client, make_token, oauth_server)
    member = bearer(make_token(["tenant-a"]))
    assert (await client.get("/config/tenant-a", headers=member)).json()["source"] == "tenant"

    counts = await reset.reset(app_state(app), everything=False)

    assert counts["provider_configs"] == 1
    assert counts["oauth_connections"] == 1
    assert counts["oauth_clients"] == 1
    assert "workspaces" not in counts and "revoked_tokens" not in counts
    admin = bearer(make_token(["tenant-a"], roles=["admin"]))
    workspace = await client.get("/api/admin/workspaces/tenant-a", headers=admin)
    assert workspace.status_code == 200 and workspace.json()["tier"] == "pro"
    assert (await client.get("/config/tenant-a", headers=member)).json()["source"] == "default"
    async with app_state(app).sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(ProviderConfig)) == 0


async def test_a_reset_with_all_removes_the_workspaces_too(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    await _populate(client, make_token, oauth_server)
    counts = await reset.reset(app_state(app), everything=True)
    assert counts["workspaces"] == 1
    admin = bearer(make_token(["tenant-a"], roles=["admin"]))
    assert (await client.get("/api/admin/workspaces/tenant-a", headers=admin)).status_code == 404


def _environment(monkeypatch: pytest.MonkeyPatch, database_url: str, environment: str) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv("ENCRYPTION_KEYS", f"k1:{Keyring.generate_key()}")
    monkeypatch.setenv("AUTH_JWT_SECRET", "s" * 48)
    monkeypatch.delenv("REDIS_URL", raising=False)


def test_the_reset_command_is_refused_outside_dev_without_force(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _environment(monkeypatch, database_url, "staging")
    assert main(["reset", "--yes"]) == 2
    assert "--force" in capsys.readouterr().err


def test_the_reset_command_asks_first_and_does_nothing_without_a_yes(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _environment(monkeypatch, database_url, "dev")
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    assert main(["reset"]) == 1
    assert "nothing removed" in capsys.readouterr().out


def test_the_reset_command_prints_what_it_removed(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _environment(monkeypatch, database_url, "staging")
    assert main(["reset", "--yes", "--force"]) == 0
    out = capsys.readouterr().out
    assert "provider_configs" in out and "removed 0 rows" in out
    assert "kept: revoked_tokens, workspaces, workspace_deletions" in out

"""Databases for the copy and verify tests: fresh ones of either kind, filled through the app."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app import cli
from app.core import migrations
from app.core.auth import mint_token
from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.usage.models import UsageEvent
from tests.conftest import PG_ADMIN_URL, _pg_admin, bearer, build_settings, running_app
from tests.oauth_fixtures import connect_branch
from tests.provider_configs.conftest import post_config, provider
from tests.tokens.helpers import read_token

TENANT = "tenant-a"
API_KEY = "sk-live-copy-test-1234"

NewDatabase = Callable[[str], Awaitable[str]]


@pytest.fixture
def new_database(tmp_path: Path) -> Iterator[NewDatabase]:
    """`new_database("postgresql" | "sqlite")`: the URL of an empty database (no schema), which
    is dropped (or deleted with the test's directory) afterwards."""
    created: list[str] = []

    async def make(kind: str) -> str:
        name = f"junction_copy_{uuid.uuid4().hex[:10]}"
        if kind == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / name}.db"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    yield make
    for name in created:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass(frozen=True)
class Filled:
    """What the app stored, to be found again on a copy."""

    token: str  # a service and admin token of TENANT
    access_token: str  # the connection's access token, as the app read it


def settings_for(url: str) -> Any:
    # In-process cache: an app on a copy must read the copy, not what another app cached.
    return build_settings(url, redis_url=None)


async def fill_through_app(url: str, oauth_server: LocalOAuthServer) -> Filled:
    """Rows in every domain, written through the app's API: a client and its connection
    (encrypted tokens), a configuration with an API key in two versions, usage events and
    counters, a workspace's tier, a webhook (an encrypted secret) and a revoked token."""
    settings = settings_for(url)
    token = mint_token(settings, sub="ops", tenants=[TENANT], roles=["service", "admin"])
    async with running_app(settings) as (_app, client):
        await connect_branch(client, token, oauth_server)
        access = (await read_token(client, token)).json()["access_token"]
        headers = bearer(token)
        for zoom in (3, 4):
            written = await post_config(
                client,
                headers,
                payment=[provider("stripe", api_key=API_KEY, config_data={"zoom": zoom})],
            )
            assert written.status_code == 200, written.text
        events = [
            {
                "tenant_id": TENANT,
                "model": "gpt-4o",
                "prompt_tokens": 10 + n,
                "completion_tokens": n,
                "source": "test",
                "request_id": f"req-{n}",
            }
            for n in range(20)
        ]
        assert (await client.post("/usage/openai", json=events, headers=headers)).status_code < 300
        workspace = await client.put(
            f"/api/admin/workspaces/{TENANT}",
            json={"name": "Tenant A", "tier": "pro"},
            headers=headers,
        )
        assert workspace.status_code == 200, workspace.text
        hook = await client.put(
            "/monitoring/webhook", json={"url": "http://127.0.0.1:9/hook"}, headers=headers
        )
        assert hook.status_code < 300, hook.text
        revoked = mint_token(settings, sub="gone", tenants=[TENANT])
        assert (await client.post("/auth/revoke", headers=bearer(revoked))).status_code == 200
    return Filled(token=token, access_token=access)


async def add_usage_events(url: str, count: int) -> None:
    """`count` usage events written straight into the table (a big table to interrupt)."""
    engine = create_async_engine(url, poolclass=NullPool)
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4().hex,
            "tenant_id": TENANT,
            "request_id": f"bulk-{uuid.uuid4().hex}",
            "model": "gpt-4o",
            "source": "bulk",
            "prompt_tokens": n,
            "completion_tokens": 1,
            "total_tokens": n + 1,
            "estimated_cost_usd": None,
            "occurred_at": now,
            "period": now.strftime("%Y-%m"),
            "recorded_at": now,
        }
        for n in range(count)
    ]
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(UsageEvent), rows)
    finally:
        await engine.dispose()


async def junction(*args: str) -> int:
    """The `junction` command, in a thread (it runs an event loop of its own)."""
    return await asyncio.to_thread(cli.main, list(args))


@pytest.fixture
async def migrated() -> AsyncIterator[Callable[[str], Any]]:
    async def migrate(url: str, revision: str = "head") -> None:
        await asyncio.to_thread(migrations.upgrade, url, revision)

    yield migrate

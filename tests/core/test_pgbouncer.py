"""Junction behind PgBouncer in transaction pooling mode (DB_PGBOUNCER=true), on a real PgBouncer
the tests start in front of the machine's PostgreSQL, with two server connections for all the
app's pooled ones."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.core.config import Settings
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from tests.conftest import (
    PG_ADMIN_URL,
    TokenFactory,
    _pg_admin,
    bearer,
    build_settings,
    postgres_only,
    recorded_statements,
    running_app,
)
from tests.oauth_fixtures import LOCAL_PROVIDER, connect_branch
from tests.pgbouncer import PgBouncer

pytestmark = postgres_only

ROOT = Path(__file__).resolve().parents[2]
TENANTS = [f"tenant-{n}" for n in range(4)]


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    bouncer = PgBouncer(PG_ADMIN_URL, server_pool_size=2).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="module")
def bounced_database(pgbouncer: PgBouncer) -> Iterator[str]:
    """A fresh database, migrated through PgBouncer by `junction migrate` as an operator runs it;
    its URL through PgBouncer."""
    name = f"junction_pgbouncer_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = pgbouncer.url(name)
    try:
        migrated = subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "DB_PGBOUNCER": "true", "ENVIRONMENT": "test"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _bounced_settings(url: str, **overrides: object) -> Settings:
    return build_settings(url, db_pgbouncer=True, **overrides)


async def _raw_connection(pgbouncer: PgBouncer, database: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1",
        port=pgbouncer.port,
        user=pgbouncer.user,
        database=database,
        statement_cache_size=0,
    )


async def test_pgbouncer_hands_one_server_connection_to_several_clients(
    pgbouncer: PgBouncer,
) -> None:
    # What makes the rest meaningful: the app's connections really share server connections.
    clients = [await _raw_connection(pgbouncer) for _ in range(5)]
    try:
        pids = {await c.fetchval("SELECT pg_backend_pid()") for c in clients}
    finally:
        for c in clients:
            await c.close()
    assert len(pids) <= 2


async def test_without_the_setting_pgbouncer_refuses_the_connection_settings(
    bounced_database: str,
) -> None:
    settings = build_settings(bounced_database)
    assert not settings.db_pgbouncer
    with pytest.raises(Exception, match="unsupported startup parameter: statement_timeout"):
        async with running_app(settings):
            pass


async def test_the_app_runs_through_pgbouncer_under_concurrent_requests(
    bounced_database: str, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    service = {
        t: bearer(make_token(tenants=[t], roles=["service"], sub="backend")) for t in TENANTS
    }
    # A slow shared machine queues requests for the app's pool: wait rather than answer 503.
    settings = _bounced_settings(bounced_database, db_pool_timeout_s=60)
    async with running_app(settings) as (_, client):
        # A login and a forced refresh (row lock, SET LOCAL lock and statement timeouts).
        token = make_token(tenants=[TENANTS[0]], roles=["service"])
        await connect_branch(client, token, oauth_server, "branch-1")
        read = await client.get(
            "/token-management/tokens/branch-1",
            params={"provider": LOCAL_PROVIDER},
            headers=bearer(token),
        )
        assert read.status_code == 200, read.text
        refreshed = await client.post(
            "/token-management/tokens/refresh",
            json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
            headers=bearer(token),
        )
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["access_token"] != read.json()["access_token"]
        assert oauth_server.refresh_calls == 1

        # Configuration writes and reads and usage events, many at once on 2 server connections.
        async def write_config(tenant: str, n: int) -> int:
            body = {"map_providers": [{"provider_name": f"p{n}", "config_data": {"n": n}}]}
            response = await client.post(f"/config/{tenant}", json=body, headers=service[tenant])
            return response.status_code

        async def record_usage(tenant: str, n: int) -> int:
            body = {
                "tenant_id": tenant,
                "model": "gpt-4o",
                "prompt_tokens": n,
                "completion_tokens": 1,
                "source": "pgbouncer-test",
                "request_id": f"{tenant}-{n}",
            }
            response = await client.post("/usage/openai", json=body, headers=service[tenant])
            return response.status_code

        statuses = await asyncio.gather(
            *(write_config(t, n) for t in TENANTS for n in range(3)),
            *(record_usage(t, n) for t in TENANTS for n in range(1, 6)),
        )
        assert statuses == [200] * 12 + [201] * 20

        async def read_config(tenant: str) -> set[str]:
            response = await client.get(f"/config/{tenant}", headers=service[tenant])
            assert response.status_code == 200, response.text
            return {p["provider_name"] for p in response.json()["map_providers"]}

        async def read_quota(tenant: str) -> dict[str, int]:
            response = await client.get(f"/usage/{tenant}/quota", headers=service[tenant])
            assert response.status_code == 200, response.text
            return dict(response.json()["used"])

        configs = await asyncio.gather(*(read_config(t) for t in TENANTS))
        quotas = await asyncio.gather(*(read_quota(t) for t in TENANTS))
    assert configs == [{f"p{n}" for n in range(3)}] * len(TENANTS)
    assert quotas == [{"tokens": 15 + 5, "calls": 5}] * len(TENANTS)


async def test_the_statement_timeout_holds_in_every_transaction_and_stays_there(
    bounced_database: str, pgbouncer: PgBouncer
) -> None:
    settings = _bounced_settings(bounced_database, db_statement_timeout_ms=300)
    async with running_app(settings) as (app, _):
        engine = app_state(app).engine
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW statement_timeout"))).scalar() == "300ms"
            assert (await conn.execute(text("SHOW jit"))).scalar() == "off"
            workers = await conn.execute(text("SHOW max_parallel_workers_per_gather"))
            assert workers.scalar() == "0"
        with pytest.raises(DBAPIError, match="statement timeout"):
            async with app_state(app).sessionmaker() as session:
                await session.execute(text("SELECT pg_sleep(30)"))
        # The pool's connection is usable again, in a transaction of its own.
        async with engine.begin() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    # Local to the transaction, not SET: nothing stays behind on the server connections
    # PgBouncer shares.
    raw = await _raw_connection(pgbouncer, bounced_database.rsplit("/", 1)[1])
    try:
        for _ in range(4):
            assert await raw.fetchval("SHOW statement_timeout") == "0"
            jit_default = "SELECT reset_val FROM pg_settings WHERE name = 'jit'"
            assert await raw.fetchval("SHOW jit") == await raw.fetchval(jit_default)
    finally:
        await raw.close()


async def test_a_configuration_read_from_the_database_runs_under_the_timeout(
    bounced_database: str, make_token: TokenFactory
) -> None:
    # Without PgBouncer the cache loader's one SELECT runs in autocommit; here it needs a
    # transaction for SET LOCAL to apply to it.
    headers = bearer(make_token(tenants=["tenant-cold"], roles=["service"]))
    settings = _bounced_settings(bounced_database, db_statement_timeout_ms=4321)
    async with running_app(settings) as (app, client):
        with recorded_statements(
            app, lambda s: "statement_timeout" in s or "FROM provider_configs" in s
        ) as seen:
            response = await client.get("/config/tenant-cold", headers=headers)
    assert response.status_code == 200
    assert seen[0].startswith("SELECT set_config('statement_timeout', '4321', true)")
    assert any("FROM provider_configs" in s for s in seen[1:])

"""The admin console: every page rendered server-side with 10,000 connections, 1,000,000 usage
events and 100,000 monitoring events in one workspace (and as many monitoring events in other
workspaces: the overview lists the latest of all), seeded with SQL; p50 and p95 of sequential
requests, the rollback preview (a POST) included."""

from __future__ import annotations

import re
import statistics
import time

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.admin import sessions
from app.core.db import create_sessionmaker
from bench.harness import BenchContext

TENANT = "bench-console"
CONNECTIONS = 10_000
EVENTS = 1_000_000
DAYS = 180
MONITORING_EVENTS = 100_000
RUNS = 30
TARGET = "< 100 ms p50"

# Connections of every status the listing reports: stored ones, and expiries past, near and far.
_SEED_CONNECTIONS = f"""
INSERT INTO oauth_connections (id, tenant_id, client_id, provider, branch_id, access_token_enc,
    token_type, expires_at, status, last_refreshed_at, last_error, failure_count, refresh_due_at,
    created_at, updated_at)
SELECT md5('conn' || g), '{TENANT}', :client_id, 'bench_oauth', 'branch-' || lpad(g::text, 6, '0'),
       'not-a-ciphertext', 'Bearer', now() + ((g % 7) - 1) * interval '1 hour',
       (ARRAY['active', 'active', 'active', 'refresh_failed', 'needs_reauth'])[1 + g % 5],
       now() - interval '1 hour', CASE WHEN g % 5 = 3 THEN 'server_error' END, 0,
       now() + ((g % 7) - 1) * interval '1 hour' - interval '5 minutes', now(), now()
FROM generate_series(1, {CONNECTIONS}) AS g
"""
_SEED_EVENTS = f"""
INSERT INTO usage_events (id, tenant_id, request_id, model, source, prompt_tokens,
    completion_tokens, total_tokens, estimated_cost_usd, occurred_at, period, recorded_at)
SELECT md5('ev' || g), '{TENANT}', NULL,
       (ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'o3-mini'])[1 + g % 4], 'chat',
       100 + g % 900, 50 + g % 400, 150 + g % 900 + g % 400, 0.001, at,
       to_char(at AT TIME ZONE 'UTC', 'YYYY-MM'), now()
FROM generate_series(1, {EVENTS}) AS g,
     LATERAL (SELECT now() - g * ({DAYS} * 86400 / {EVENTS}.0) * interval '1 second' AS at) AS t
"""
_SEED_ROLLUPS = f"""
INSERT INTO usage_daily_rollups (tenant_id, day, model, source, shard, calls, prompt_tokens,
    completion_tokens, total_tokens, estimated_cost_usd, unpriced_calls, updated_at)
SELECT tenant_id, CAST(timezone('UTC', occurred_at) AS DATE), model, source, 0, count(*),
       sum(prompt_tokens), sum(completion_tokens), sum(total_tokens),
       coalesce(sum(estimated_cost_usd), 0), count(*) - count(estimated_cost_usd), now()
FROM usage_events WHERE tenant_id = '{TENANT}' GROUP BY 1, 2, 3, 4
"""
_SEED_COUNTERS = f"""
INSERT INTO usage_counters (tenant_id, period, shard, calls, prompt_tokens, completion_tokens,
    total_tokens, estimated_cost_usd, unpriced_calls, updated_at)
SELECT tenant_id, period, 0, count(*), sum(prompt_tokens), sum(completion_tokens),
       sum(total_tokens), coalesce(sum(estimated_cost_usd), 0),
       count(*) - count(estimated_cost_usd), now()
FROM usage_events WHERE tenant_id = '{TENANT}' GROUP BY 1, 2
"""
# The workspace's events and as many of other workspaces', spread over the same days.
_SEED_MONITORING = f"""
INSERT INTO monitoring_events (id, tenant_id, type, provider, branch_id, occurred_at, reason)
SELECT md5('me' || g), CASE WHEN g % 2 = 0 THEN '{TENANT}' ELSE 'other-' || g % 50 END,
       (ARRAY['refresh_failed', 'recovered', 'needs_reauth', 'connected'])[1 + g % 4],
       'bench_oauth', 'branch-' || lpad((g % {CONNECTIONS})::text, 6, '0'),
       now() - g * ({DAYS} * 86400 / {2 * MONITORING_EVENTS}.0) * interval '1 second',
       CASE WHEN g % 4 = 0 THEN 'server_error' END
FROM generate_series(1, {2 * MONITORING_EVENTS}) AS g
"""
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def _seed(ctx: BenchContext, client_id: str) -> float:
    engine = create_async_engine(ctx.database_url, poolclass=NullPool)
    try:
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            await conn.execute(text(_SEED_CONNECTIONS), {"client_id": client_id})
            await conn.execute(text(_SEED_EVENTS))
            await conn.execute(text(_SEED_ROLLUPS))
            await conn.execute(text(_SEED_COUNTERS))
            await conn.execute(text(_SEED_MONITORING))
        seeded = time.perf_counter() - started
        async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text("SET statement_timeout = 0"))
            for table in (
                "oauth_connections",
                "usage_events",
                "usage_daily_rollups",
                "monitoring_events",
            ):
                await conn.execute(text(f"VACUUM ANALYZE {table}"))
        return seeded
    finally:
        await engine.dispose()


async def _signed_in(ctx: BenchContext, client: httpx.AsyncClient) -> str:
    """Sign `client` in with a one-time link; the session's CSRF token."""
    engine = create_async_engine(ctx.database_url, poolclass=NullPool)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            secret = await sessions.issue_link(session, ctx.settings, subject="bench")
    finally:
        await engine.dispose()
    page = await client.get("/admin/link", params={"token": secret})
    found = _CSRF.search(page.text)
    assert found is not None
    answer = await client.post("/admin/link", data={"token": secret, "csrf_token": found[1]})
    assert answer.status_code == 303, answer.text
    session_csrf = _CSRF.search((await client.get("/admin")).text)
    assert session_csrf is not None
    return session_csrf[1]


async def _config_id(ctx: BenchContext, client: httpx.AsyncClient) -> str:
    service = {"Authorization": f"Bearer {ctx.token([TENANT], ['service'])}"}
    for zoom in (10, 12):
        body = {
            "map_providers": [
                {
                    "provider_name": "mapbox",
                    "priority": "primary",
                    "enabled": True,
                    "config_data": {"zoom": zoom},
                    "api_key": "sk-bench-1234",
                }
            ]
        }
        written = await client.post(f"/config/{TENANT}", json=body, headers=service)
        assert written.status_code == 200, written.text
    return str(written.json()["map_providers"][0]["id"])


async def _timed(client: httpx.AsyncClient, path: str) -> list[float]:
    answer = await client.get(path)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        answer = await client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200
    return timings


async def _timed_post(client: httpx.AsyncClient, path: str, form: dict[str, str]) -> list[float]:
    timings = []
    for _ in range(RUNS + 1):
        started = time.perf_counter()
        answer = await client.post(path, data=form)
        timings.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return timings[1:]  # the first warms up, as in _timed


async def run(ctx: BenchContext) -> None:
    admin = {"Authorization": f"Bearer {ctx.token(['*'], ['admin'])}"}
    async with httpx.AsyncClient(base_url=ctx.base_url, timeout=60) as client:
        assert (
            await client.put(f"/api/admin/workspaces/{TENANT}", json={"tier": "pro"}, headers=admin)
        ).status_code == 200
        registered = await client.post(
            "/token-management/clients",
            json={
                "tenant_id": TENANT,
                "provider": "bench_oauth",
                "name": "bench",
                "client_id": "bench",
                "client_secret": "bench-secret",
                "redirect_uri": "http://127.0.0.1/cb",
                "scopes": ["read"],
                "return_urls": ["http://127.0.0.1/done"],
                "authorization_url": "http://127.0.0.1:9/authorize",
                "token_url": "http://127.0.0.1:9/token",
            },
            headers=admin,
        )
        assert registered.status_code == 201, registered.text
        seeded = await _seed(ctx, registered.json()["id"])
        ctx.report(
            f"seeding {CONNECTIONS:,} connections, {EVENTS:,} usage events, "
            f"{2 * MONITORING_EVENTS:,} monitoring events (SQL)",
            seeded,
            "s",
        )
        config_id = await _config_id(ctx, client)
        csrf = await _signed_in(ctx, client)
        pages = {
            "overview": "/admin",
            "workspaces": "/admin/workspaces",
            "workspace (30 days, first 50 connections)": f"/admin/workspaces/{TENANT}",
            "workspace, 90 days": f"/admin/workspaces/{TENANT}?days=90",
            "connections filtered (status=refresh_failed)": (
                f"/admin/workspaces/{TENANT}/connections?status=refresh_failed"
            ),
            "usage fragment, 90 days": f"/admin/workspaces/{TENANT}/usage?days=90",
            "provider configurations": f"/admin/configs?tenant_id={TENANT}",
            "configuration history": f"/admin/configs/{TENANT}/{config_id}",
            "version diff": f"/admin/configs/{TENANT}/{config_id}/diff?from=1&to=2",
        }
        for name, path in pages.items():
            timings = await _timed(client, path)
            p50 = statistics.median(timings)
            p95 = statistics.quantiles(timings, n=20)[-1]
            ctx.report(f"{name} p50", p50, "ms", TARGET)
            ctx.report(f"{name} p95", p95, "ms")
        preview = {"csrf_token": csrf, "version": "1", "expected_version": "2", "reason": "bench"}
        timings = await _timed_post(
            client, f"/admin/configs/{TENANT}/{config_id}/rollback/preview", preview
        )
        ctx.report("rollback preview (POST) p50", statistics.median(timings), "ms", TARGET)
        ctx.report("rollback preview (POST) p95", statistics.quantiles(timings, n=20)[-1], "ms")

"""Monitoring: the due-connection query at 10,000 vs 1,000,000 rows, and the loop's refresh rate.

Runs against a database of its own (created and dropped here), so a million connections never sit
in the harness database that other sections measure.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.core import migrations
from app.core.config import Settings
from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.main import create_app
from app.monitoring import repository
from app.monitoring.lifecycle import build_monitor
from app.state import app_state
from app.tokens.refresh_outcome import RefreshResult
from bench.harness import ROOT, BenchContext
from tests.oauth_fixtures import connect_branch

DATABASE = "junction_bench_monitoring"
DUE = 1_000
SMALL = 10_000
LARGE = 1_000_000
SAMPLES = 40
REFRESH_CONNECTIONS = 400

CLIENT_ID = "b" * 32
INSERT_CLIENT = text(
    """
    INSERT INTO oauth_clients (id, tenant_id, provider, name, client_id, client_secret_enc,
        redirect_uri, scopes, return_urls, provider_settings, created_at, updated_at)
    VALUES (:id, 'bench', 'google_search_console', 'bench', 'app', 'x',
        'https://example.com/cb', '[]', '[]', '{}', now(), now())
    """
)
# Rows 1..DUE are overdue; every other row is due some time in the next day.
INSERT_CONNECTIONS = text(
    """
    INSERT INTO oauth_connections (id, tenant_id, client_id, provider, branch_id,
        access_token_enc, refresh_token_enc, token_type, expires_at, status, failure_count,
        last_refreshed_at, refresh_due_at, created_at, updated_at)
    SELECT md5(g::text), 'tenant-' || (g % 1000), :client_id, 'google_search_console',
        'branch-' || g, 'x', 'x', 'Bearer', now() + interval '1 day', 'active', 0, now(),
        CASE WHEN g <= :due THEN now() - make_interval(secs => g)
             ELSE now() + interval '1 minute' + make_interval(secs => g % 86400) END,
        now(), now()
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS g
    """
)
EXPLAIN_DUE = text(
    """
    EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
    SELECT id FROM oauth_connections
    WHERE refresh_due_at <= :now AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY refresh_due_at LIMIT :limit FOR UPDATE SKIP LOCKED
    """
)


async def _populate(url: str, rows: int) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(INSERT_CLIENT, {"id": CLIENT_ID})
            await conn.execute(
                INSERT_CONNECTIONS, {"client_id": CLIENT_ID, "due": DUE, "first": 1, "last": rows}
            )
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE oauth_connections"))
            # Write the bulk insert out now, not while the queries are being timed.
            await autocommit.execute(text("CHECKPOINT"))
    finally:
        await engine.dispose()


async def _find_ms(engine: AsyncEngine) -> float:
    """One run of the loop's due query (with its row locks), rolled back."""
    query = repository.due_connections_query(utcnow(), DUE).with_for_update(skip_locked=True)
    async with engine.connect() as conn, conn.begin() as tx:
        started = time.perf_counter()
        found = (await conn.execute(query)).all()
        elapsed = (time.perf_counter() - started) * 1000
        await tx.rollback()
    assert len(found) == DUE, len(found)
    return elapsed


async def _lease_ms(engine: AsyncEngine) -> float:
    """One run of the whole lease statement (find, lock, mark owner), rolled back."""
    now = utcnow()
    async with engine.connect() as conn, conn.begin() as tx:
        session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint")
        started = time.perf_counter()
        leased = await repository.lease_due_connections(
            session, owner="bench", now=now, lease_until=now + timedelta(minutes=2), limit=DUE
        )
        elapsed = (time.perf_counter() - started) * 1000
        await session.close()
        await tx.rollback()
    assert len(leased) == DUE, len(leased)
    return elapsed


async def _explain(engine: AsyncEngine) -> str:
    async with engine.connect() as conn, conn.begin() as tx:
        rows = (await conn.execute(EXPLAIN_DUE, {"now": utcnow(), "limit": DUE})).all()
        await tx.rollback()
    return "\n".join(f"      {row[0]}" for row in rows)


async def _due_query_scaling(ctx: BenchContext, small_url: str, large_url: str) -> None:
    started = time.perf_counter()
    await asyncio.gather(_populate(small_url, SMALL), _populate(large_url, LARGE))
    took = time.perf_counter() - started
    print(f"  (populated {SMALL:,} and {LARGE:,} connections in {took:.0f} s)")
    small = create_async_engine(small_url, pool_size=1)
    large = create_async_engine(large_url, pool_size=1)
    try:
        for engine in (small, large):  # warm the pool, the plan cache and the buffers
            for _ in range(5):
                await _find_ms(engine)
                await _lease_ms(engine)
        # Alternate the two databases, so load from elsewhere on the machine hits both alike.
        times: dict[str, list[float]] = {"find-s": [], "find-l": [], "lease-s": [], "lease-l": []}
        for _ in range(SAMPLES):
            times["find-s"].append(await _find_ms(small))
            times["find-l"].append(await _find_ms(large))
            times["lease-s"].append(await _lease_ms(small))
            times["lease-l"].append(await _lease_ms(large))
        median = {key: statistics.median(values) for key, values in times.items()}
        ctx.report(f"find {DUE:,} due among {SMALL:,} connections (median)", median["find-s"], "ms")
        ctx.report(f"find {DUE:,} due among {LARGE:,} connections (median)", median["find-l"], "ms")
        ctx.report(
            "find due: 1,000,000 / 10,000", median["find-l"] / median["find-s"], "ratio", "<= 1.5"
        )
        ctx.report(f"lease {DUE:,} due among {SMALL:,} (median)", median["lease-s"], "ms")
        ctx.report(f"lease {DUE:,} due among {LARGE:,} (median)", median["lease-l"], "ms")
        ctx.report("lease due: 1,000,000 / 10,000", median["lease-l"] / median["lease-s"], "ratio")
        print(f"    plan of the due query at {LARGE:,} connections:\n{await _explain(large)}")
        async with small.begin() as conn:  # the refresh-rate runs reuse the small database
            await conn.execute(text("TRUNCATE oauth_connections, oauth_clients CASCADE"))
    finally:
        await small.dispose()
        await large.dispose()


@dataclass
class RemoteProvider:
    """The local authorization server running in its own process (so it does not share this
    process's interpreter lock with the loop being measured), as the test helpers expect it."""

    base_url: str
    client_id: str
    client_secret: str

    def provider_urls(self) -> dict[str, str]:
        return {
            "authorization_url": f"{self.base_url}/authorize",
            "token_url": f"{self.base_url}/token",
            "revoke_url": f"{self.base_url}/revoke",
        }


@asynccontextmanager
async def _provider_process() -> AsyncIterator[RemoteProvider]:
    script = (
        "import sys\n"
        "from app.devtools.oauth_provider import LocalOAuthServer\n"
        "server = LocalOAuthServer().start()\n"
        "print(server.base_url, flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdin=PIPE, stdout=PIPE
    )
    try:
        assert process.stdout is not None
        base_url = (await process.stdout.readline()).decode().strip()
        defaults = LocalOAuthServer()
        yield RemoteProvider(base_url, defaults.client_id, defaults.client_secret)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            process.kill()


async def _provider_round_trip_ms(provider: RemoteProvider) -> float:
    """A token call answered with an error: the provider's own latency, without a grant."""
    times = []
    async with httpx.AsyncClient() as client:
        for _ in range(20):
            started = time.perf_counter()
            await client.post(
                provider.provider_urls()["token_url"],
                data={"grant_type": "refresh_token", "refresh_token": "unknown"},
            )
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def overdue_loop_run(
    ctx: BenchContext,
    url: str,
    provider: RemoteProvider,
    *,
    connections: int,
    concurrency: int,
    per_provider: int,
    observe: Callable[[AsyncEngine], AbstractContextManager[None]] | None = None,
) -> tuple[float, float]:
    """Refreshes/s one loop sustains against `provider` with `connections` connections all
    overdue (refreshed long enough ago for their minimum interval), and this process's CPU
    seconds per refresh (the loop runs in it). `observe(engine)` is entered just before the
    loop starts and left once every connection is refreshed, before the loop stops."""
    settings = Settings(
        _env_file=None,
        environment="dev",
        database_url=url,
        redis_url=ctx.redis_url,
        monitor_enabled=False,
        log_level="WARNING",
        db_pool_size=20,
        monitor_batch_size=200,
        monitor_concurrency=concurrency,
        monitor_per_provider_concurrency=per_provider,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            token = ctx.token(["bench-loop"], roles=["service"])
            first = await connect_branch(client, token, provider, "branch-0")
            for i in range(1, connections):
                await connect_branch(
                    client, token, provider, f"branch-{i}", client_pk=first["client_pk"]
                )
        state = app_state(app)
        async with state.sessionmaker() as session, session.begin():
            await session.execute(
                text("UPDATE oauth_connections SET refresh_due_at = :due, last_refreshed_at = :at"),
                {"due": utcnow() - timedelta(seconds=1), "at": utcnow() - timedelta(hours=1)},
            )
        monitor = build_monitor(state.settings, state.sessionmaker, state.tokens)
        with observe(state.engine) if observe is not None else nullcontext():
            started, cpu_started = time.perf_counter(), time.process_time()
            await monitor.start()
            while sum(monitor.totals.values()) < connections:
                await asyncio.sleep(0.01)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        await monitor.stop()
        assert monitor.totals[RefreshResult.REFRESHED] == connections, dict(monitor.totals)
        async with state.sessionmaker() as session, session.begin():
            await session.execute(text("TRUNCATE oauth_connections, oauth_clients CASCADE"))
    return connections / elapsed, cpu / connections


async def run(ctx: BenchContext) -> None:
    small_url, large_url = ctx.database(f"{DATABASE}_10k"), ctx.database(f"{DATABASE}_1m")
    for database in (f"{DATABASE}_10k", f"{DATABASE}_1m"):
        await ctx.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await ctx.admin(f'CREATE DATABASE "{database}"')
    try:
        for url in (small_url, large_url):
            await asyncio.to_thread(migrations.upgrade, url)
        await _due_query_scaling(ctx, small_url, large_url)
        async with _provider_process() as provider:
            latency = await _provider_round_trip_ms(provider)
            ctx.report("local provider token call round trip (median)", latency, "ms")
            for per_provider in (4, 16):
                rate, _ = await overdue_loop_run(
                    ctx,
                    small_url,
                    provider,
                    connections=REFRESH_CONNECTIONS,
                    concurrency=max(per_provider, 10),
                    per_provider=per_provider,
                )
                ctx.report(
                    f"loop refreshes/s, one provider, {per_provider} at a time", rate, "refresh/s"
                )
    finally:
        for database in (f"{DATABASE}_10k", f"{DATABASE}_1m"):
            await ctx.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

"""Revocation list: a million rows, loaded and synced in this process (memory, sync time, stall).

The case from the trust-boundaries issue: a million revoked ids, each with `expires_at` in the
year 9999. A database of its own (the running service's would load them too); the list is built
here, in this process, so its memory is this process's resident-set growth.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from app.auth.service import RevocationList
from app.core import migrations
from app.core.redis_cache import build_cache
from bench.harness import BenchContext

ROWS = 1_000_000

_SEED = f"""
INSERT INTO revoked_tokens (jti, expires_at, revoked_at, revoked_by)
SELECT md5(g::text), TIMESTAMPTZ '9999-12-31 00:00:00+00', now() - interval '1 hour', 'bench'
FROM generate_series(1, {ROWS}) AS g
"""


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> None:
    # Linux: "5" resets the process's peak resident size (VmHWM) to its current size, so the
    # peak read below is this load's, not an earlier section's.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _timed(step: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Seconds `step` took and the longest the event loop went without running a 1 ms ticker."""
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await step()
    elapsed = time.perf_counter() - started
    done = True
    await task
    return elapsed, longest


async def run(ctx: BenchContext) -> None:
    name = f"junction_bench_revocations_{os.getpid()}"
    admin_url = ctx.database_url.rsplit("/", 1)[0] + "/postgres"
    admin = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ctx.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        engine = create_async_engine(url, pool_size=2)
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            await conn.execute(text(_SEED))
        async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text("VACUUM ANALYZE revoked_tokens"))
        cache = build_cache(None)
        revocations = RevocationList(
            async_sessionmaker(engine, expire_on_commit=False), cache, settings=ctx.settings
        )
        gc.collect()
        _reset_peak_rss()
        rss_before, peak_before = _rss_mb(), _peak_rss_mb()
        load_s, _ = await _timed(revocations.start)
        await revocations.stop()
        gc.collect()
        ctx.report(f"start-up load of {ROWS:,} revocations", load_s * 1000, "ms")
        ctx.report("resident memory held by the list after the load", _rss_mb() - rss_before, "MB")
        ctx.report("peak resident growth during the load", _peak_rss_mb() - peak_before, "MB")
        # The first sync after start-up also does whatever one-off purge the rows need.
        first_s, first_stall_s = await _timed(revocations.sync)
        ctx.report("first periodic sync", first_s * 1000, "ms")
        ctx.report("longest event-loop stall during it", first_stall_s * 1000, "ms")
        syncs = [await _timed(revocations.sync) for _ in range(3)]
        sync_s, stall_s = sorted(syncs)[1]
        ctx.report("next periodic syncs (median of 3)", sync_s * 1000, "ms")
        ctx.report("longest event-loop stall during that sync", stall_s * 1000, "ms")
        gc.collect()
        ctx.report("resident memory held by the list after the syncs", _rss_mb() - rss_before, "MB")
        await engine.dispose()
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

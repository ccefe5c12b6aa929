"""Usage: events/s ingested one per request and in batches of 1,000; summary over 1M events."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.harness import BenchContext

INGEST_TENANT = "bench-usage-ingest"
SUMMARY_TENANT = "bench-usage-summary"
SUMMARY_EVENTS = 1_000_000
BATCH = 1000

# One million events of one tenant over the last 29 days (inside the summary's default 30-day
# window), five models (one unpriced), three sources; generated inside PostgreSQL.
_SEED = f"""
INSERT INTO usage_events (id, tenant_id, request_id, model, source, prompt_tokens,
    completion_tokens, total_tokens, estimated_cost_usd, occurred_at, period, recorded_at)
SELECT md5(g::text), '{SUMMARY_TENANT}', 'seed-' || g,
       (ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'o3-mini', 'in-house'])[1 + g % 5],
       (ARRAY['ai_reply', 'ai_agent', 'assistant'])[1 + g % 3],
       100 + g % 900, 50 + g % 400, 150 + g % 900 + g % 400,
       CASE WHEN g % 5 = 4 THEN NULL ELSE ((100 + g % 900) * 2.5 + (50 + g % 400) * 10) / 1e6 END,
       at, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM'), now()
FROM generate_series(1, {SUMMARY_EVENTS}) AS g,
     LATERAL (SELECT now() - g * (29 * 86400 / {SUMMARY_EVENTS}.0) * interval '1 second' AS at) AS t
"""


def _event(**extra: object) -> dict[str, object]:
    return {
        "tenant_id": INGEST_TENANT,
        "model": "gpt-4o-mini",
        "prompt_tokens": 420,
        "completion_tokens": 180,
        "source": "ai_reply",
        **extra,
    }


async def _seed_summary_tenant(ctx: BenchContext) -> float:
    engine = create_async_engine(ctx.database_url, poolclass=NullPool)
    try:
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            await conn.execute(text(_SEED))
        seeded = time.perf_counter() - started
        # Autovacuum would get there on its own; do it now so plans and the visibility map are
        # those of a table at rest rather than of one just bulk-loaded.
        async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text("VACUUM ANALYZE usage_events"))
        return seeded
    finally:
        await engine.dispose()


async def _summary_plan(ctx: BenchContext) -> str:
    engine = create_async_engine(ctx.database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "EXPLAIN SELECT model, count(*), sum(total_tokens) FROM usage_events "
                    "WHERE tenant_id = :t AND occurred_at >= now() - interval '1 day' "
                    "AND occurred_at < now() GROUP BY model"
                ),
                {"t": SUMMARY_TENANT},
            )
            plan = [row[0] for row in rows]
        return next((line.strip() for line in plan if "Scan" in line), plan[0])
    finally:
        await engine.dispose()


async def run(ctx: BenchContext) -> None:
    headers = {
        "Authorization": f"Bearer {ctx.token([INGEST_TENANT], roles=['service'])}",
        "Content-Type": "application/json",
    }
    # wrk replays one body, so a request_id would make every request after the first a repeat.
    # Without one each request is a real insert plus counter upsert, which is what is measured;
    # the repeat path is measured separately below.
    single = await ctx.load(
        "POST", "/usage/openai", headers=headers, body=json.dumps(_event()), duration_s=5
    )
    ctx.report("POST /usage/openai, 1 event/request: events/s", single.requests_per_s, "ev/s")
    ctx.report("  p50 / p99 latency", single.p50_ms, f"ms (p99 {single.p99_ms:.1f} ms)")
    if single.errors:
        ctx.report("  errors (non-2xx or socket)", single.errors)

    repeat = await ctx.load(
        "POST",
        "/usage/openai",
        headers=headers,
        body=json.dumps(_event(request_id="bench-repeat")),
        duration_s=4,
    )
    ctx.report(
        "POST /usage/openai, repeated request_id (no-op): req/s", repeat.requests_per_s, "req/s"
    )

    batch_body = json.dumps([_event() for _ in range(BATCH)])
    batch = await ctx.load(
        "POST", "/usage/openai", headers=headers, body=batch_body, duration_s=6, connections=4
    )
    ctx.report(
        "POST /usage/openai, batches of 1,000: events/s", batch.requests_per_s * BATCH, "ev/s"
    )
    ctx.report("  p50 / p99 latency per batch", batch.p50_ms, f"ms (p99 {batch.p99_ms:.1f} ms)")
    if batch.errors:
        ctx.report("  errors (non-2xx or socket)", batch.errors)

    seconds = await _seed_summary_tenant(ctx)
    ctx.report("seed 1,000,000 events of one tenant (SQL generate_series)", seconds, "s")
    print(f"  plan for a one-day range: {await _summary_plan(ctx)}")
    admin = {"Authorization": f"Bearer {ctx.token(['*'], roles=['admin'])}"}
    base = f"/api/admin/workspaces/{SUMMARY_TENANT}/usage"
    for label, query in (
        ("30 days (all 1M events), group_by=model", "?group_by=model"),
        ("30 days (all 1M events), group_by=day", "?group_by=day"),
        ("30 days (all 1M events), group_by=source", "?group_by=source"),
        ("last 24 hours (~34k events), group_by=model", "?group_by=model&from=" + _hours_ago(24)),
    ):
        # One admin at a time: the latency of one summary, not of several competing for 2 cores.
        result = await ctx.load("GET", base + query, headers=admin, duration_s=5, connections=1)
        ctx.report(f"summary {label}: p50", result.p50_ms, f"ms (p99 {result.p99_ms:.1f} ms)")
        if result.errors:
            ctx.report("  errors (non-2xx or socket)", result.errors)


def _hours_ago(hours: int) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")

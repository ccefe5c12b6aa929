"""Usage: events/s ingested one per request and in batches of 1,000; a year's summary over 10M
events from the daily rollups, next to the same summary read from the raw events."""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.state import app_state
from app.usage import folding, summaries
from app.usage.schemas import GroupBy
from bench.harness import BenchContext

INGEST_TENANT = "bench-usage-ingest"
SUMMARY_TENANT = "bench-usage-summary"
SUMMARY_EVENTS = 10_000_000
SUMMARY_DAYS = 364
BATCH = 1000
_BARE_PATH = "/bench/usage/bare_insert"
RAW_RUNS = 3
ROLLUP_RUNS = 50

# Ten million events of one tenant over the last 364 days (inside a 365-day range), five models
# (one unpriced), three sources; generated inside PostgreSQL, so seeding takes a minute or two
# rather than the hours it would take through the API.
_SEED = f"""
INSERT INTO usage_events (id, tenant_id, request_id, model, source, prompt_tokens,
    completion_tokens, total_tokens, estimated_cost_usd, occurred_at, period, recorded_at)
SELECT md5(g::text), '{SUMMARY_TENANT}', NULL,
       (ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'o3-mini', 'in-house'])[1 + g % 5],
       (ARRAY['ai_reply', 'ai_agent', 'assistant'])[1 + g % 3],
       100 + g % 900, 50 + g % 400, 150 + g % 900 + g % 400,
       CASE WHEN g % 5 = 4 THEN NULL ELSE ((100 + g % 900) * 2.5 + (50 + g % 400) * 10) / 1e6 END,
       at, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM'), now()
FROM generate_series(1, {SUMMARY_EVENTS}) AS g,
     LATERAL (SELECT now() - g * ({SUMMARY_DAYS} * 86400 / {SUMMARY_EVENTS}.0)
                     * interval '1 second' AS at) AS t
"""
# The rollups those events would have left, built the way the migration backfills them but
# spread over the eight shards as concurrent writers spread them (the summary's worst case).
_SEED_ROLLUPS = f"""
INSERT INTO usage_daily_rollups (tenant_id, day, model, source, shard, calls, prompt_tokens,
    completion_tokens, total_tokens, estimated_cost_usd, unpriced_calls, updated_at)
SELECT tenant_id, CAST(timezone('UTC', occurred_at) AS DATE), model, source,
       ('x' || substr(id, 1, 2))::bit(8)::int % 8, count(*), sum(prompt_tokens),
       sum(completion_tokens), sum(total_tokens), coalesce(sum(estimated_cost_usd), 0),
       count(*) - count(estimated_cost_usd), now()
FROM usage_events WHERE tenant_id = '{SUMMARY_TENANT}'
GROUP BY 1, 2, 3, 4, 5
"""


# The bare comparison: one durable single-row insert per request, no auth, no validation.
_BARE_INSERT = text(
    "INSERT INTO usage_events (id, tenant_id, model, source, prompt_tokens, completion_tokens,"
    " total_tokens, occurred_at, period, recorded_at) VALUES (:id, 'bench-usage-bare', 'm', 's',"
    " 1, 1, 2, now(), to_char(now(), 'YYYY-MM'), now())"
)


def register_bare_routes(app: FastAPI) -> None:
    @app.post("/bench/usage/bare_insert", include_in_schema=False)
    async def bare_insert(request: Request) -> Response:
        async with app_state(request.app).engine.begin() as conn:
            await conn.execute(_BARE_INSERT, {"id": uuid.uuid4().hex})
        return Response(status_code=201)


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
            await conn.execute(text(_SEED_ROLLUPS))
        seeded = time.perf_counter() - started
        # Autovacuum would get there on its own; do it now so plans and the visibility map are
        # those of tables at rest rather than just bulk-loaded.
        async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text("SET statement_timeout = 0"))
            await conn.execute(text("VACUUM ANALYZE usage_events"))
            await conn.execute(text("VACUUM ANALYZE usage_daily_rollups"))
        return seeded
    finally:
        await engine.dispose()


async def _in_process_p50_ms(
    ctx: BenchContext,
    window: summaries.SummaryRange,
    group_by: GroupBy,
    *,
    rollups: bool,
    runs: int,
) -> float:
    """The summary service called directly, `runs` times in a row: the p50 of its wall time.

    In process, not over HTTP: read from the raw events a year of ten million rows takes longer
    than the service's statement timeout, so this engine lifts it.
    """
    engine = create_async_engine(
        ctx.database_url,
        poolclass=NullPool,
        connect_args={"server_settings": {"statement_timeout": "0"}},
    )
    try:
        timings = []
        async with engine.connect() as conn:
            session = AsyncSession(bind=conn)
            for _ in range(runs):
                started = time.perf_counter()
                await summaries.summarize(
                    session,
                    ctx.settings,
                    SUMMARY_TENANT,
                    window,
                    group_by,
                    now=datetime.now(UTC),
                    use_rollups=rollups,
                )
                timings.append((time.perf_counter() - started) * 1000)
                await session.rollback()
        return statistics.median(timings)
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
    # Alternating rounds of the route and the bare insert, so both see the same machine; the
    # median round's ratio.
    rounds = []
    for round_number in range(3):
        order = ("ours", "bare") if round_number % 2 == 0 else ("bare", "ours")
        results = {}
        for which in order:
            path, sent = ("/usage/openai", headers) if which == "ours" else (_BARE_PATH, {})
            results[which] = await ctx.load(
                "POST", path, headers=sent, body=json.dumps(_event()), duration_s=4
            )
        rounds.append((results["ours"], results["bare"]))
    rounds.sort(key=lambda pair: pair[0].requests_per_s / pair[1].requests_per_s)
    single, bare = rounds[len(rounds) // 2]
    ctx.report("POST /usage/openai, 1 event/request: events/s", single.requests_per_s, "ev/s")
    ctx.report("  p50 / p99 latency", single.p50_ms, f"ms (p99 {single.p99_ms:.1f} ms)")
    ctx.report(
        "bare endpoint, one durable single-row insert/request: req/s", bare.requests_per_s, "req/s"
    )
    ctx.report("  p50 / p99 latency", bare.p50_ms, f"ms (p99 {bare.p99_ms:.1f} ms)")
    ctx.report(
        "events/s / bare inserts/s (median of 3 paired rounds)",
        single.requests_per_s / bare.requests_per_s,
        "x",
        target=">= 2",
    )
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

    if os.environ.get("JUNCTION_BENCH_USAGE_INGEST_ONLY"):
        print("  (JUNCTION_BENCH_USAGE_INGEST_ONLY set: the 10M-event summary part is skipped)")
        return
    # PostgreSQL only, as the whole bench: the seed is generate_series SQL.
    seconds = await _seed_summary_tenant(ctx)
    ctx.report("seed 10,000,000 events of one tenant and their rollups (SQL)", seconds, "s")
    now = datetime.now(UTC)
    window = summaries.SummaryRange(start=now - timedelta(days=365), end=now)
    unfolded = await _in_process_p50_ms(ctx, window, GroupBy.model, rollups=True, runs=ROLLUP_RUNS)
    ctx.report("summary, 365 days, group_by=model, 8 shards a day (unfolded): p50", unfolded, "ms")
    ctx.report(
        "fold the closed days' shards (what each replica does every 10 min)", await _fold(ctx), "s"
    )
    await _summaries(ctx)


async def _fold(ctx: BenchContext) -> float:
    engine = create_async_engine(ctx.database_url, poolclass=NullPool)
    try:
        started = time.perf_counter()
        async with AsyncSession(engine) as session, session.begin():
            now = datetime.now(UTC)
            await folding.fold_closed_days(session, today=now.date(), now=now)
        seconds = time.perf_counter() - started
        async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text("VACUUM ANALYZE usage_daily_rollups"))
        return seconds
    finally:
        await engine.dispose()


async def _summaries(ctx: BenchContext) -> None:
    admin = {"Authorization": f"Bearer {ctx.token(['*'], roles=['admin'])}"}
    now = datetime.now(UTC)
    window = summaries.SummaryRange(start=now - timedelta(days=365), end=now)
    base = f"/api/admin/workspaces/{SUMMARY_TENANT}/usage?from={_hours_ago(365 * 24)}"
    for group_by in GroupBy:
        # One admin at a time: the latency of one summary, not of several competing for 2 cores.
        result = await ctx.load(
            "GET", f"{base}&group_by={group_by}", headers=admin, duration_s=5, connections=1
        )
        ctx.report(
            f"summary, 365 days over 10M events, group_by={group_by} (HTTP): p50",
            result.p50_ms,
            f"ms (p99 {result.p99_ms:.1f} ms)",
            target="<= 20 ms",
        )
        if result.errors:
            ctx.report("  errors (non-2xx or socket)", result.errors)
    for group_by in (GroupBy.model, GroupBy.day):
        from_rollups = await _in_process_p50_ms(
            ctx, window, group_by, rollups=True, runs=ROLLUP_RUNS
        )
        from_events = await _in_process_p50_ms(ctx, window, group_by, rollups=False, runs=RAW_RUNS)
        ctx.report(f"  same, group_by={group_by}, in process, rollups: p50", from_rollups, "ms")
        ctx.report(f"  same, group_by={group_by}, in process, raw events: p50", from_events, "ms")
        ctx.report("  raw / rollups", from_events / from_rollups, "x")


def _hours_ago(hours: int) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")

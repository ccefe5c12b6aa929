"""copy-db: a million usage events plus every other table, SQLite -> PostgreSQL and back, verified.

The source is a SQLite file of its own, filled with bulk inserts (not through the API); the
copies go into a PostgreSQL database and a second SQLite file of their own, so the running
service's database is untouched. Figures: rows per second each way, copy and verification
together (the command's whole run, migration of the target included), and the verification
alone (`verify-db` of the two ends).

`JUNCTION_BENCH_COPY_EVENTS` sets the number of usage events (default 1,000,000), for a quicker
run while working on the copy: `JUNCTION_BENCH_COPY_EVENTS=100000 make bench ARGS="--only copy_db"`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

from app.core import migrations
from app.operations.copy_db import copy_database
from app.operations.verify_db import verify_databases
from bench.harness import BenchContext

EVENTS = int(os.environ.get("JUNCTION_BENCH_COPY_EVENTS", "1000000"))
TENANTS = 200
_STAMP = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a datetime in SQLite


def _events(count: int) -> Iterator[tuple[Any, ...]]:
    start = datetime(2026, 1, 1)
    random = Random(14)
    for n in range(count):
        at = (start + timedelta(seconds=n * 7, microseconds=n % 1000)).isoformat(
            " ", "microseconds"
        )
        prompt, completion = 100 + n % 900, 20 + n % 300
        yield (
            random.randbytes(16).hex(),  # random keys, as uuid4().hex ids are
            f"tenant-{n % TENANTS}",
            f"req-{n}" if n % 3 else None,
            "gpt-4o-mini" if n % 2 else "gpt-4o",
            "bench",
            prompt,
            completion,
            prompt + completion,
            (prompt * 0.15 + completion * 0.6) / 1e6 if n % 10 else None,
            at,
            at[:7],
            at,
        )


def seed_sqlite(path: Path, events: int) -> int:
    """A source at the latest schema: `events` usage events, and rows in every other table."""
    migrations.upgrade(f"sqlite+aiosqlite:///{path}")
    now = datetime.now(UTC).strftime(_STAMP)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")  # the random keys' indexes fit in memory
        db.executemany(
            "INSERT INTO workspaces (id, name, tier, created_at, updated_at) VALUES (?,?,?,?,?)",
            [(f"tenant-{t}", f"Tenant {t}", "pro", now, now) for t in range(TENANTS)],
        )
        db.executemany(
            "INSERT INTO usage_events (id, tenant_id, request_id, model, source, prompt_tokens,"
            " completion_tokens, total_tokens, estimated_cost_usd, occurred_at, period,"
            " recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            _events(events),
        )
        db.execute(
            "INSERT INTO usage_counters (tenant_id, period, shard, calls, prompt_tokens,"
            " completion_tokens, total_tokens, estimated_cost_usd, unpriced_calls, updated_at)"
            " SELECT tenant_id, period, 0, count(*), sum(prompt_tokens), sum(completion_tokens),"
            " sum(total_tokens), coalesce(sum(estimated_cost_usd), 0),"
            " sum(estimated_cost_usd IS NULL), ? FROM usage_events GROUP BY tenant_id, period",
            (now,),
        )
        for t in range(TENANTS):
            config_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO provider_configs (id, tenant_id, provider_type, provider_name,"
                " priority, enabled, config_data, version, deleted, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    config_id,
                    f"tenant-{t}",
                    "map",
                    "osm",
                    "primary",
                    1,
                    '{"zoom": 3}',
                    2,
                    0,
                    now,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO provider_config_versions (config_id, tenant_id, provider_type,"
                " provider_name, version, change_type, snapshot, changed_at, changed_by)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (config_id, f"tenant-{t}", "map", "osm", v, "updated", '{"zoom": 3}', now, "b")
                    for v in (1, 2)
                ],
            )
            client_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO oauth_clients (id, tenant_id, provider, name, client_id,"
                " client_secret_enc, redirect_uri, scopes, return_urls, provider_settings,"
                " status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    client_id,
                    f"tenant-{t}",
                    "wix",
                    "app",
                    "cid",
                    "v1:enc",
                    "https://x/cb",
                    '["a"]',
                    "[]",
                    "{}",
                    "active",
                    now,
                    now,
                ),
            )
            db.execute(
                "INSERT INTO oauth_connections (id, tenant_id, client_id, provider, branch_id,"
                " access_token_enc, token_type, status, failure_count, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    uuid.uuid4().hex,
                    f"tenant-{t}",
                    client_id,
                    "wix",
                    "main",
                    "v1:enc",
                    "Bearer",
                    "active",
                    0,
                    now,
                    now,
                ),
            )
        db.commit()
        return int(
            db.execute(
                "SELECT "
                + " + ".join(
                    f"(SELECT count(*) FROM {table})"
                    for table in (
                        "workspaces",
                        "usage_events",
                        "usage_counters",
                        "provider_configs",
                        "provider_config_versions",
                        "oauth_clients",
                        "oauth_connections",
                    )
                )
            ).fetchone()[0]
        )
    finally:
        db.close()


def _load() -> str:
    """The machine's load average (1, 5, 15 minutes): other work stretches the wall clock."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


async def run(ctx: BenchContext) -> None:
    root = Path(tempfile.mkdtemp(prefix="junction-bench-copy-"))
    source, back = root / "source.db", root / "back.db"
    database = f"junction_bench_copy_{os.getpid()}"
    postgres = ctx.database(database)
    started = time.perf_counter()
    rows = await asyncio.to_thread(seed_sqlite, source, EVENTS)
    print(f"  load average before the copies: {_load()}", flush=True)
    print(
        f"  source: {rows:,} rows ({EVENTS:,} usage events) in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    await ctx.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await ctx.admin(f'CREATE DATABASE "{database}"')
    try:
        for label, src, dst in (
            ("SQLite -> PostgreSQL", f"sqlite:///{source}", postgres),
            ("PostgreSQL -> SQLite", postgres, f"sqlite:///{back}"),
        ):
            print(f"  {label}: load average {_load()}", flush=True)
            started, cpu_started = time.perf_counter(), time.process_time()
            report = await copy_database(src, dst)
            seconds = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            assert not report.differences, [t.table for t in report.differences]
            assert report.rows == rows
            ctx.report(f"{label}, copy + verify: seconds", seconds, "s", target="< 60 s")
            ctx.report(f"{label}, copy + verify: rows per second", rows / seconds, "rows/s")
            ctx.report(f"{label}, copy alone: seconds", report.copy_s, "s")
            ctx.report(f"{label}, copy alone: rows per second", rows / report.copy_s, "rows/s")
            ctx.report(f"{label}, verify alone: seconds", report.verify_s, "s")
            ctx.report(f"{label}, verify alone: rows per second", rows / report.verify_s, "rows/s")
            # This process's CPU (not the database server's): what the copy costs here even
            # when other work shares the machine and stretches the wall clock.
            ctx.report(f"{label}, CPU seconds of the command's process", cpu_s, "s")
        started = time.perf_counter()
        comparisons = await verify_databases(f"sqlite:///{source}", f"sqlite:///{back}")
        assert all(c.matches for c in comparisons)
        ctx.report(
            "verify-db SQLite source vs SQLite copy-back: rows per second",
            rows / (time.perf_counter() - started),
            "rows/s",
        )
        print(f"  load average after the copies: {_load()}", flush=True)
    finally:
        await ctx.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for path in root.iterdir():
            path.unlink()
        root.rmdir()

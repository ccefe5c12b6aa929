"""`make bench`: start Junction on PostgreSQL + Redis with one worker and run every section."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shutil
import traceback

import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core import migrations
from app.core.config import Settings, normalize_database_url
from bench.harness import BenchContext, run_server, sections_available

PG_ADMIN_URL = os.environ.get(
    "JUNCTION_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("JUNCTION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
# One database per run, so two runs on one machine never drop each other's.
DATABASE = os.environ.get("JUNCTION_BENCH_DATABASE", f"junction_bench_{os.getpid()}")


async def _admin(statement: str) -> None:
    engine = create_async_engine(
        normalize_database_url(PG_ADMIN_URL), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _flush_redis() -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def main(only: list[str] | None) -> int:
    database_url = normalize_database_url(PG_ADMIN_URL).rsplit("/", 1)[0] + f"/{DATABASE}"
    await _admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{DATABASE}"')
    await asyncio.to_thread(migrations.upgrade, database_url)
    await _flush_redis()
    env = {
        "ENVIRONMENT": "dev",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "MONITOR_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": "20",
    }
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    names = [n for n in sections_available() if not only or n in only]
    tool = "wrk" if shutil.which("wrk") else "python load generator"
    print(f"Junction benchmarks: PostgreSQL + Redis, one uvicorn worker, load from {tool}")
    failures = 0
    async with run_server(env) as base_url:
        ctx = BenchContext(base_url, database_url, REDIS_URL, settings, env)
        for name in names:
            print(f"\n[{name}]", flush=True)
            ctx.section = name
            try:
                module = importlib.import_module(f"bench.sections.{name}")
                await module.run(ctx)
            except Exception:
                failures += 1
                print(f"  section {name} failed:")
                traceback.print_exc()
    print("\nSummary")
    for report in ctx.reports:
        target = f" (target {report.target})" if report.target else ""
        print(
            f"  {report.section:<18} {report.label:<58} "
            f"{report.value:>12,.3f} {report.unit}{target}"
        )
    await _admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", action="append", help="run only this section (repeatable)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.only)))

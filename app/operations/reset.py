"""`junction reset`: a factory reset. Every table is emptied but the workspaces (with their
tiers) and the offboarding records, unless `--all`; revocations always stay."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, delete, select, union
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import Base
from app.operations.engine import command_app, printable_url, run_to_end
from app.state import AppState

# A reset never revives a revoked bearer token (the rows leave by themselves once it expires).
ALWAYS_KEPT = ("revoked_tokens",)
# The admin's own settings: kept unless `--all`.
KEPT_UNLESS_ALL = ("workspaces", "workspace_deletions")


def tables_to_empty(*, everything: bool) -> list[Table]:
    """Children before parents, read from the metadata so that a new table is not forgotten."""
    import app.models  # noqa: F401  (every domain's tables are in the metadata)

    kept = set(ALWAYS_KEPT) | (set() if everything else set(KEPT_UNLESS_ALL))
    return [table for table in reversed(Base.metadata.sorted_tables) if table.name not in kept]


async def _tenants_with_rows(engine: AsyncEngine, tables: Iterable[Table]) -> list[str]:
    selects = [select(t.c.tenant_id) for t in tables if "tenant_id" in t.c]
    async with engine.connect() as conn:
        return sorted(str(t) for t in (await conn.scalars(union(*selects))).all())


async def reset(state: AppState, *, everything: bool) -> dict[str, int]:
    """Delete the rows in one transaction; then every replica forgets the tenants' cached
    reads. Rows deleted per table."""
    tables = tables_to_empty(everything=everything)
    tenants = await _tenants_with_rows(state.engine, tables)
    counts: dict[str, int] = {}
    async with state.engine.begin() as conn:
        for table in tables:
            result = await conn.execute(delete(table))
            counts[table.name] = int(result.rowcount)
    await forget_tenants(state, tenants)
    return counts


async def forget_tenants(state: AppState, tenants: Iterable[str]) -> None:
    from app.provider_configs import service as provider_configs_service

    for tenant in tenants:
        await provider_configs_service.forget_tenant(state.provider_configs, tenant)
        await state.tokens.invalidate(tenant_id=tenant)


def kept_tables(*, everything: bool) -> list[str]:
    return list(ALWAYS_KEPT) + ([] if everything else list(KEPT_UNLESS_ALL))


def print_counts(counts: dict[str, int], out: Any) -> None:
    width = max(len(name) for name in counts) if counts else 0
    for name, rows in sorted(counts.items()):
        print(f"{name:<{width}}  {rows:>8}", file=out)
    print(f"removed {sum(counts.values())} rows from {len(counts)} tables", file=out)


def command(args: argparse.Namespace) -> int:
    """`junction reset [--all] [--yes] [--force]`: 0 done, 1 not confirmed, 2 refused (3, the
    database failed, comes from `app.cli.main`)."""
    settings = Settings()
    if settings.environment.lower() not in {"dev", "development"} and not args.force:
        print(
            f"junction reset: refused in ENVIRONMENT={settings.environment} (add --force)",
            file=sys.stderr,
        )
        return 2
    what = "all data and the workspaces" if args.all else "all data but the workspaces"
    target = printable_url(settings.database_url)
    if not args.yes:
        try:
            answer = input(f"This deletes {what} in {target}. Type 'reset' to go on: ")
        except EOFError:  # no terminal to answer from (stdin closed): not confirmed
            answer = ""
        if answer.strip() != "reset":
            print("nothing removed")
            return 1

    async def run() -> dict[str, int]:
        async with command_app(settings) as state:
            return await reset(state, everything=args.all)

    print_counts(run_to_end(run()), sys.stdout)
    print(f"kept: {', '.join(kept_tables(everything=args.all))}")
    return 0

"""Folding the rollup shards of closed UTC days into one row each, so summaries read fewer rows.

Shards exist for concurrent writers of the same day; once a day is over, late events are rare and
its eight rows per (tenant, model, source) only cost the summaries that read them. Folding moves
the figures of every shard but 0 into shard 0 in one transaction, additively, so it is exact at
any moment and may run on any number of replicas at once (each row is moved once: whoever locks
it first deletes it). A late event for a folded day adds to a shard again; the next fold moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

from sqlalchemy import Date, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import UTCDateTime, is_postgres
from app.usage.service import FIGURES

logger = logging.getLogger(__name__)

_KEY = ("tenant_id", "day", "model", "source")
_COLUMNS = ", ".join((*_KEY, "shard", *FIGURES, "updated_at"))
_SUMS = ", ".join(f"sum({name})" for name in FIGURES)
_ADD = ", ".join(f"{name} = usage_daily_rollups.{name} + excluded.{name}" for name in FIGURES)
_UPSERT_TAIL = f"""
GROUP BY tenant_id, day, model, source ORDER BY tenant_id, day, model, source
ON CONFLICT (tenant_id, day, model, source, shard) DO UPDATE SET {_ADD},
    updated_at = excluded.updated_at
"""

# PostgreSQL: lock the rows to move in key order (writers lock theirs in key order too, so the two
# cannot deadlock), delete them, and add what they held to shard 0, in one statement.
# The f-strings only splice in the column names of FIGURES, constants of this package.
_FOLD_POSTGRES_SQL = f"""
WITH doomed AS (
    SELECT tenant_id, day, model, source, shard FROM usage_daily_rollups
    WHERE day < :before AND shard <> 0
    ORDER BY tenant_id, day, model, source, shard
    FOR UPDATE
), moved AS (
    DELETE FROM usage_daily_rollups AS r USING doomed AS d
    WHERE r.tenant_id = d.tenant_id AND r.day = d.day AND r.model = d.model
      AND r.source = d.source AND r.shard = d.shard
    RETURNING r.*
)
INSERT INTO usage_daily_rollups ({_COLUMNS})
SELECT tenant_id, day, model, source, 0, {_SUMS}, CAST(:now AS TIMESTAMP WITH TIME ZONE)
FROM moved
{_UPSERT_TAIL}
"""  # noqa: S608
# SQLite has one writer at a time: the add and the delete in one transaction are enough.
_ADD_SQLITE_SQL = f"""
INSERT INTO usage_daily_rollups ({_COLUMNS})
SELECT tenant_id, day, model, source, 0, {_SUMS}, :now FROM usage_daily_rollups
WHERE day < :before AND shard <> 0
{_UPSERT_TAIL}
"""  # noqa: S608
_DAY_AND_NOW = (bindparam("before", type_=Date()), bindparam("now", type_=UTCDateTime()))
_FOLD_POSTGRES = text(_FOLD_POSTGRES_SQL).bindparams(*_DAY_AND_NOW)
_ADD_SQLITE = text(_ADD_SQLITE_SQL).bindparams(*_DAY_AND_NOW)
_DELETE_SQLITE = text(
    "DELETE FROM usage_daily_rollups WHERE day < :before AND shard <> 0"
).bindparams(bindparam("before", type_=Date()))


async def fold_closed_days(session: AsyncSession, *, today: date, now: datetime) -> None:
    """Move every shard's figures of the days before `today` into shard 0 (flushes only)."""
    parameters = {"before": today, "now": now}
    if is_postgres(session):
        await session.execute(_FOLD_POSTGRES, parameters)
    else:
        await session.execute(_ADD_SQLITE, parameters)
        await session.execute(_DELETE_SQLITE, {"before": today})


@contextlib.asynccontextmanager
async def folding_loop(
    sessionmaker: async_sessionmaker[AsyncSession], interval_s: float
) -> AsyncIterator[None]:
    """Fold every `interval_s` (0: never) while the app runs; a failed fold is logged and the
    next one tries again."""
    if interval_s <= 0:
        yield
        return
    task = asyncio.create_task(_fold_every(sessionmaker, interval_s), name="usage-rollup-folding")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _fold_every(sessionmaker: async_sessionmaker[AsyncSession], interval_s: float) -> None:
    while True:
        # Jittered, so replicas started together do not fold at the same moment.
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))
        now = datetime.now(UTC)
        try:
            async with sessionmaker() as session, session.begin():
                await fold_closed_days(session, today=now.date(), now=now)
        except Exception:
            logger.exception("folding the usage rollups failed; the next run tries again")

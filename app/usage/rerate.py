"""Re-pricing recorded events after a price correction; their counters and rollups follow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, func, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import UTCDateTime, dialect_insert, is_postgres
from app.usage.models import UsageEvent
from app.usage.prices import COST_QUANTUM, PriceTable
from app.usage.service import counters_table, events_table, rollups_table, utc_day

DEFAULT_BATCH = 1000
# Re-pricing moves these two figures and nothing else: tokens and calls do not change.
_MOVED = ("estimated_cost_usd", "unpriced_calls")
_UNMOVED = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)


@dataclass
class RerateResult:
    scanned: int = 0
    changed: int = 0
    batches: int = 0


async def rerate_range(
    sessionmaker: async_sessionmaker[AsyncSession],
    prices: PriceTable,
    start: datetime,
    end: datetime,
    *,
    batch: int = DEFAULT_BATCH,
    now: datetime,
) -> RerateResult:
    """Recompute the cost and price version of every event that occurred in [start, end) with
    `prices`, one transaction per batch of events (in (occurred_at, id) order).

    Idempotent: an event whose cost and version are already those of `prices` is left alone, so
    a second run, or one resumed after a failure, changes nothing twice. Each batch takes the
    changed events' old figures off their counters and rollups and adds the new ones, in SQL and
    in the transaction that updates the events, so the sums stay exact while ingestion goes on.
    """
    result = RerateResult()
    after: tuple[datetime, str] | None = None
    while True:
        async with sessionmaker() as session, session.begin():
            rows = await _next_batch(session, start, end, after, batch)
            if not rows:
                return result
            changes = _changes(prices, rows)
            if changes:
                await _reprice(session, changes, now)
        result.scanned += len(rows)
        result.changed += len(changes)
        result.batches += 1
        after = (rows[-1].occurred_at, rows[-1].id)


async def _next_batch(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    after: tuple[datetime, str] | None,
    batch: int,
) -> list[Any]:
    ev = events_table.c
    statement = (
        select(
            ev.id,
            ev.model,
            ev.prompt_tokens,
            ev.completion_tokens,
            ev.cached_tokens,
            ev.reasoning_tokens,
            ev.estimated_cost_usd,
            ev.price_version,
            ev.occurred_at,
        )
        .where(ev.occurred_at >= start, ev.occurred_at < end)
        .order_by(ev.occurred_at, ev.id)
        .limit(batch)
    )
    if after is not None:
        statement = statement.where(tuple_(ev.occurred_at, ev.id) > tuple_(*after))
    if is_postgres(session):
        # Held to the commit: a concurrent rerate of the same range waits, then finds the rows
        # already at the new price.
        statement = statement.with_for_update(of=events_table)
    return list((await session.execute(statement)).all())


def _changes(prices: PriceTable, rows: list[Any]) -> list[dict[str, Any]]:
    changes = []
    for row in rows:
        quote = prices.quote(
            row.model,
            row.prompt_tokens,
            row.completion_tokens,
            cached_tokens=row.cached_tokens,
            reasoning_tokens=row.reasoning_tokens,
            at=row.occurred_at,
        )
        cost = None if quote is None else quote.cost
        version = None if quote is None else quote.version
        if _same_cost(cost, row.estimated_cost_usd) and version == row.price_version:
            continue
        changes.append({"id": row.id, "estimated_cost_usd": cost, "price_version": version})
    return changes


def _same_cost(new: Decimal | None, old: Decimal | None) -> bool:
    if new is None or old is None:
        return new is old
    # SQLite hands NUMERIC back through a float: compare at the stored scale.
    return new == old.quantize(COST_QUANTUM)


async def _reprice(session: AsyncSession, changes: list[dict[str, Any]], now: datetime) -> None:
    ids = [change["id"] for change in changes]
    await _move_figures(session, ids, sign=-1, now=now)
    # An UPDATE per primary key, sent as one executemany.
    await session.execute(update(UsageEvent), changes)
    await _move_figures(session, ids, sign=1, now=now)


async def _move_figures(
    session: AsyncSession, event_ids: list[str], *, sign: int, now: datetime
) -> None:
    """Add (sign 1) or take off (sign -1) the events' cost and unpriced count, as they stand, on
    their counters and rollups (shard 0: any shard's share is part of the same sum)."""
    ev = events_table.c
    factor = literal(sign)
    moved: list[Any] = [
        (factor * func.coalesce(func.sum(ev.estimated_cost_usd), 0)).cast(Numeric(20, 10)),
        factor * (func.count() - func.count(ev.estimated_cost_usd)),
    ]
    unmoved = [literal(0) for _ in _UNMOVED]
    stamp = literal(now, UTCDateTime())
    where = ev.id.in_(event_ids)
    targets: tuple[tuple[Any, list[Any], list[str]], ...] = (
        (counters_table, [ev.tenant_id, ev.period], ["tenant_id", "period"]),
        (
            rollups_table,
            [ev.tenant_id, utc_day(session, ev.occurred_at), ev.model, ev.source],
            ["tenant_id", "day", "model", "source"],
        ),
    )
    for table, keys, key_names in targets:
        figures = (
            select(*keys, literal(0), *unmoved, *moved, stamp)
            .where(where)
            .group_by(*keys)
            .order_by(*keys)
        )
        columns = [*key_names, "shard", *_UNMOVED, *_MOVED, "updated_at"]
        upsert = dialect_insert(session, table).from_select(columns, figures)
        await session.execute(
            upsert.on_conflict_do_update(
                index_elements=[*key_names, "shard"],
                set_={
                    **{name: table.c[name] + upsert.excluded[name] for name in _MOVED},
                    "updated_at": upsert.excluded.updated_at,
                },
            )
        )

"""Usage logic: record events idempotently, add them to counters and rollups, summarise in SQL."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    SmallInteger,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import UTCDateTime, dialect_insert, is_postgres, new_id
from app.usage import alerts
from app.usage.exceptions import InvalidUsageInput
from app.usage.models import (
    COUNTER_SHARDS,
    UsageCounter,
    UsageDailyRollup,
    UsageEvent,
)
from app.usage.prices import PriceTable
from app.usage.schemas import (
    LimitFigures,
    PeriodQuota,
    UsageEventIn,
    UsageEventRead,
)
from app.workspaces import service as workspace_service

# Callers' clocks drift; an event further in the future than this is refused, since it would be
# counted against a period that has not started.
FUTURE_TOLERANCE = timedelta(minutes=10)

events_table = UsageEvent.__table__
counters_table = UsageCounter.__table__
rollups_table = UsageDailyRollup.__table__


def period_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def period_bounds(moment: datetime) -> tuple[datetime, datetime]:
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


# --- recording ----------------------------------------------------------------------------


async def record_events(
    session: AsyncSession,
    settings: Settings,
    prices: PriceTable,
    events: Sequence[UsageEventIn],
    *,
    now: datetime,
    indexed: bool = False,
) -> list[UsageEventRead]:
    """Insert the events (a repeated request_id is skipped), add the new ones to the counters
    and rollups, and record the budget thresholds they crossed.

    All or nothing: the caller's unit of work commits events, counters, rollups and crossings
    together. A repeat, including one racing in another transaction, returns the stored first
    event.
    """
    rows = [
        _event_row(prices, event, now, f"[{i}]." if indexed else "")
        for i, event in enumerate(events)
    ]
    for tenant_id in sorted({row["tenant_id"] for row in rows}):
        await workspace_service.ensure_workspace(session, tenant_id)

    # Rows as execute() parameters, not .values(rows): the statement is compiled once and cached,
    # and SQLAlchemy packs the rows into multi-row INSERTs itself ("insertmanyvalues").
    # Sorted by the idempotency key: a writer that meets another's uncommitted request_id waits
    # for it, and two batches sharing ids in opposite orders would otherwise deadlock.
    in_key_order = sorted(rows, key=lambda row: (row["tenant_id"], row["request_id"] or ""))
    inserted = set(
        (await session.execute(_statements(session).insert_events, in_key_order)).scalars()
    )
    if inserted:
        await _add_to_counters_and_rollups(session, inserted, now)
        # Last: its lock on the tenant's period is held only from here to the commit.
        await alerts.record_crossings(session, settings, _added(rows, inserted), now=now)

    firsts = await _first_events(session, [row for row in rows if row["id"] not in inserted])
    results: list[UsageEventRead] = []
    for row in rows:
        if row["id"] in inserted:
            results.append(UsageEventRead(**row, duplicate=False))
        else:
            first = firsts[(row["tenant_id"], row["request_id"])]
            results.append(UsageEventRead(**first._mapping, duplicate=True))
    return results


def check_event(prices: PriceTable, event: UsageEventIn, *, now: datetime) -> None:
    """Raise InvalidUsageInput as record_events would for this event, without writing."""
    _event_row(prices, event, now, "")


def _added(rows: list[dict[str, Any]], inserted: set[str]) -> list[alerts.Added]:
    sums: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        if row["id"] in inserted:
            figures = sums.setdefault((row["tenant_id"], row["period"]), [0, 0])
            figures[0] += row["total_tokens"]
            figures[1] += 1
    return [
        alerts.Added(tenant_id=tenant_id, period=period, tokens=tokens, calls=calls)
        for (tenant_id, period), (tokens, calls) in sums.items()
    ]


def _event_row(
    prices: PriceTable, event: UsageEventIn, now: datetime, field: str
) -> dict[str, Any]:
    try:
        occurred_at = (event.occurred_at or now).astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+01:00: its UTC time falls before year 1.
        raise InvalidUsageInput(f"{field}occurred_at", "is out of range") from None
    if occurred_at > now + FUTURE_TOLERANCE:
        raise InvalidUsageInput(f"{field}occurred_at", "is in the future")
    cached, reasoning = event.cached_tokens, event.reasoning_tokens
    if cached > event.prompt_tokens:
        raise InvalidUsageInput(
            f"{field}prompt_tokens_details.cached_tokens", "cannot exceed prompt_tokens"
        )
    if reasoning > event.completion_tokens:
        raise InvalidUsageInput(
            f"{field}completion_tokens_details.reasoning_tokens", "cannot exceed completion_tokens"
        )
    quote = prices.quote(
        event.model,
        event.prompt_tokens,
        event.completion_tokens,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        at=occurred_at,
    )
    return {
        "id": new_id(),
        "tenant_id": event.tenant_id,
        "request_id": event.request_id,
        "model": event.model,
        "source": event.source,
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.prompt_tokens + event.completion_tokens,
        "cached_tokens": cached,
        "reasoning_tokens": reasoning,
        "estimated_cost_usd": None if quote is None else quote.cost,
        "price_version": None if quote is None else quote.version,
        "occurred_at": occurred_at,
        "period": period_of(occurred_at),
        "recorded_at": now,
    }


async def _add_to_counters_and_rollups(
    session: AsyncSession, event_ids: set[str], now: datetime
) -> None:
    """One adding upsert per (tenant, period) counter and per (tenant, day, model, source) rollup,
    summed in SQL from the rows just inserted.

    Never read-modify-write: each writer adds its own figures to one of the shard rows (picked at
    random, so concurrent writers seldom wait on each other). A request uses one shard for all its
    rows and locks them in key order, counters before rollups, so two batches cannot deadlock.
    """
    statements = _statements(session)
    parameters = {
        "event_ids": list(event_ids),
        "shard": random.randrange(COUNTER_SHARDS),
        "now": now,
    }
    await session.execute(statements.add_to_counters, parameters)
    await session.execute(statements.add_to_rollups, parameters)


@dataclass(frozen=True)
class _Statements:
    insert_events: Any
    add_to_counters: Any
    add_to_rollups: Any


# What a counter row adds up and a summary reports, under the same names.
FIGURES = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated_cost_usd",
    "unpriced_calls",
)


def _statements(session: AsyncSession) -> _Statements:
    # Built once per dialect with bind parameters: constructing these per request cost more
    # Python time than running them.
    name = session.get_bind().dialect.name
    if name not in _STATEMENTS:
        _STATEMENTS[name] = _build_statements(session)
    return _STATEMENTS[name]


def _build_statements(session: AsyncSession) -> _Statements:
    ev = events_table.c
    insert_events = (
        dialect_insert(session, events_table)
        .on_conflict_do_nothing(index_elements=["tenant_id", "request_id"])
        .returning(ev.id)
    )
    figures = (
        select(
            ev.tenant_id,
            ev.period,
            bindparam("shard", type_=SmallInteger()),
            *event_aggregates().values(),
            bindparam("now", type_=UTCDateTime()),
        )
        .where(ev.id.in_(bindparam("event_ids", expanding=True)))
        .group_by(ev.tenant_id, ev.period)
        .order_by(ev.tenant_id, ev.period)
    )
    columns = ["tenant_id", "period", "shard", *FIGURES, "updated_at"]
    upsert = dialect_insert(session, counters_table).from_select(columns, figures)
    counter = counters_table.c
    added = {name: counter[name] + upsert.excluded[name] for name in FIGURES}
    add_to_counters = upsert.on_conflict_do_update(
        index_elements=["tenant_id", "period", "shard"],
        set_={**added, "updated_at": upsert.excluded.updated_at},
    )
    return _Statements(
        insert_events=insert_events,
        add_to_counters=add_to_counters,
        add_to_rollups=_build_add_to_rollups(session),
    )


def _build_add_to_rollups(session: AsyncSession) -> Any:
    ev = events_table.c
    day = utc_day(session, ev.occurred_at)
    keys = (ev.tenant_id, day, ev.model, ev.source)
    figures = (
        select(
            *keys,
            bindparam("shard", type_=SmallInteger()),
            *event_aggregates().values(),
            bindparam("now", type_=UTCDateTime()),
        )
        .where(ev.id.in_(bindparam("event_ids", expanding=True)))
        .group_by(*keys)
        .order_by(*keys)
    )
    columns = ["tenant_id", "day", "model", "source", "shard", *FIGURES, "updated_at"]
    upsert = dialect_insert(session, rollups_table).from_select(columns, figures)
    rollup = rollups_table.c
    return upsert.on_conflict_do_update(
        index_elements=["tenant_id", "day", "model", "source", "shard"],
        set_={
            **{name: rollup[name] + upsert.excluded[name] for name in FIGURES},
            "updated_at": upsert.excluded.updated_at,
        },
    )


def event_aggregates() -> dict[str, ColumnElement[Any]]:
    """What a set of events adds up to, under the names of FIGURES."""
    ev = events_table.c
    return {
        "calls": func.count(),
        "prompt_tokens": func.sum(ev.prompt_tokens),
        "completion_tokens": func.sum(ev.completion_tokens),
        "total_tokens": func.sum(ev.total_tokens),
        "cached_tokens": func.sum(ev.cached_tokens),
        "reasoning_tokens": func.sum(ev.reasoning_tokens),
        "estimated_cost_usd": func.coalesce(func.sum(ev.estimated_cost_usd), 0),
        "unpriced_calls": func.count() - func.count(ev.estimated_cost_usd),
    }


def utc_day(session: AsyncSession, moment: ColumnElement[Any]) -> ColumnElement[Any]:
    """The UTC calendar day of a stored instant, as the rollups key it."""
    if is_postgres(session):
        # A literal, not a bind parameter: PostgreSQL must see the GROUP BY expression and the
        # selected one as identical.
        return cast(func.timezone(literal_column("'UTC'"), moment), Date)
    # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'; date() takes its day.
    return func.date(moment)


_STATEMENTS: dict[str, _Statements] = {}


async def _first_events(
    session: AsyncSession, repeats: list[dict[str, Any]]
) -> dict[tuple[str, str | None], Any]:
    if not repeats:
        return {}
    keys = {(row["tenant_id"], row["request_id"]) for row in repeats}
    ev = events_table.c
    result = await session.execute(
        select(events_table).where(tuple_(ev.tenant_id, ev.request_id).in_(list(keys)))
    )
    return {(row.tenant_id, row.request_id): row for row in result}


# --- quota ----------------------------------------------------------------------------------


async def current_quota(
    session: AsyncSession, settings: Settings, tenant_id: str, *, now: datetime
) -> PeriodQuota:
    """The tenant's counters for the current month against its tier's limits."""
    tier = await workspace_service.get_tier(session, tenant_id)
    quotas = await current_quotas(session, settings, {tenant_id: tier}, now=now)
    return quotas[tenant_id]


async def current_quotas(
    session: AsyncSession, settings: Settings, tiers: dict[str, str], *, now: datetime
) -> dict[str, PeriodQuota]:
    """Several tenants' counters for the current month against their tiers' limits (`tiers`:
    tenant id to tier), in one grouped query (the console's workspace list)."""
    period = period_of(now)
    counter = counters_table.c
    used = await session.execute(
        select(
            counter.tenant_id,
            cast(func.coalesce(func.sum(counter.total_tokens), 0), BigInteger),
            cast(func.coalesce(func.sum(counter.calls), 0), BigInteger),
        )
        .where(counter.tenant_id.in_(list(tiers)), counter.period == period)
        .group_by(counter.tenant_id)
    )
    used_by_tenant = {tenant_id: (tokens, calls) for tenant_id, tokens, calls in used.all()}
    all_limits = workspace_service.tier_limits(settings)
    quotas: dict[str, PeriodQuota] = {}
    for tenant_id, tier in tiers.items():
        limits = all_limits.get(tier, {})
        used_tokens, used_calls = used_by_tenant.get(tenant_id, (0, 0))
        token_limit, call_limit = limits.get("tokens"), limits.get("calls")
        quotas[tenant_id] = PeriodQuota(
            period=period,
            tier=tier,
            limits=LimitFigures(tokens=token_limit, calls=call_limit),
            used=LimitFigures(tokens=used_tokens, calls=used_calls),
            remaining=LimitFigures(
                tokens=_remaining(token_limit, used_tokens),
                calls=_remaining(call_limit, used_calls),
            ),
            exceeded=_over(token_limit, used_tokens) or _over(call_limit, used_calls),
            resets_at=period_bounds(now)[1],
        )
    return quotas


def _remaining(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(limit - used, 0)


def _over(limit: int | None, used: int) -> bool:
    return limit is not None and used >= limit

"""Usage logic: record events idempotently, add them to counters and rollups, summarise in SQL."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    cast,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import dialect_insert, is_postgres, new_id
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
    utc = moment.astimezone(UTC)
    # strftime("%Y-%m") at a third of its cost, and as it writes years before 1000 (unpadded).
    return f"{utc.year}-{utc.month:02d}"


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
        event_row(prices, event, now=now, field=f"[{i}]." if indexed else "")
        for i, event in enumerate(events)
    ]
    return await record_rows(session, settings, rows, now=now)


async def record_rows(
    session: AsyncSession, settings: Settings, rows: Sequence[EventRow], *, now: datetime
) -> list[UsageEventRead]:
    """record_events for rows already checked and priced by `event_row` (the group commit
    prices each event once, when its request arrives)."""
    tenant_ids = {row["tenant_id"] for row in rows}
    budgets = await alerts.budgets(session, tenant_ids)
    if missing := tenant_ids - budgets.keys():
        # A tenant's first event: its workspace is created (at the default tier) with it.
        await workspace_service.ensure_workspaces(session, missing)
        budgets.update(await alerts.budgets(session, missing))

    # Rows as execute() parameters, not .values(rows): the statement is compiled once and cached,
    # and SQLAlchemy packs the rows into multi-row INSERTs itself ("insertmanyvalues").
    # Sorted by the idempotency key: a writer that meets another's uncommitted request_id waits
    # for it, and two batches sharing ids in opposite orders would otherwise deadlock.
    in_key_order = sorted(rows, key=lambda row: (row["tenant_id"], row["request_id"] or ""))
    inserted = set(
        (await session.execute(_statements(session).insert_events, in_key_order)).scalars()
    )
    if inserted:
        added = [row for row in rows if row["id"] in inserted]
        await _add_to_counters_and_rollups(session, added, now)
        # Last: its lock on the tenant's period is held only from here to the commit.
        await alerts.record_crossings(session, settings, _added(added), budgets, now=now)

    firsts = await _first_events(session, [row for row in rows if row["id"] not in inserted])
    results: list[UsageEventRead] = []
    for row in rows:
        if row["id"] in inserted:
            results.append(UsageEventRead(**row, duplicate=False))
        else:
            first = firsts[(row["tenant_id"], row["request_id"])]
            results.append(UsageEventRead(**first._mapping, duplicate=True))
    return results


# An event as its row of usage_events (`event_row`).
EventRow = dict[str, Any]


def _added(added: list[dict[str, Any]]) -> list[alerts.Added]:
    sums: dict[tuple[str, str], list[int]] = {}
    for row in added:
        figures = sums.setdefault((row["tenant_id"], row["period"]), [0, 0])
        figures[0] += row["total_tokens"]
        figures[1] += 1
    return [
        alerts.Added(tenant_id=tenant_id, period=period, tokens=tokens, calls=calls)
        for (tenant_id, period), (tokens, calls) in sums.items()
    ]


def event_row(
    prices: PriceTable, event: UsageEventIn, *, now: datetime, field: str = ""
) -> EventRow:
    """The event checked (InvalidUsageInput names the field, after `field`, a prefix such as
    "[3]." in a list) and priced at the price in effect when it happened, as the row to insert."""
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
    session: AsyncSession, added: list[dict[str, Any]], now: datetime
) -> None:
    """One adding upsert per (tenant, period) counter and per (tenant, day, model, source) rollup,
    of the figures of the rows just inserted (summed here: they are in hand, and reading them
    back cost a query each that the planner could turn into a scan of a fast-growing table).

    Never read-modify-write: each writer adds its own figures to one of the shard rows (picked at
    random, so concurrent writers seldom wait on each other). A request uses one shard for all its
    rows and locks them in key order, counters before rollups, so two batches cannot deadlock.
    """
    counters: dict[tuple[Any, ...], dict[str, Any]] = {}
    rollups: dict[tuple[Any, ...], dict[str, Any]] = {}
    with localcontext(_EXACT):
        for row in added:
            _add_figures(counters, (row["tenant_id"], row["period"]), row)
            # occurred_at is UTC already: its date is the UTC day the rollups key.
            day = row["occurred_at"].date()
            _add_figures(rollups, (row["tenant_id"], day, row["model"], row["source"]), row)
    shard = random.randrange(COUNTER_SHARDS)
    statements = _statements(session)
    await session.execute(
        statements.add_to_counters,
        [
            {"tenant_id": tenant_id, "period": period, "shard": shard, **figures, "updated_at": now}
            for (tenant_id, period), figures in sorted(counters.items())
        ],
    )
    await session.execute(
        statements.add_to_rollups,
        [
            {
                "tenant_id": tenant_id,
                "day": day,
                "model": model,
                "source": source,
                "shard": shard,
                **figures,
                "updated_at": now,
            }
            for (tenant_id, day, model, source), figures in sorted(rollups.items())
        ],
    )


def _add_figures(
    sums: dict[tuple[Any, ...], dict[str, Any]], key: tuple[Any, ...], row: dict[str, Any]
) -> None:
    """Add one event row to its group's figures: what `event_aggregates` computes in SQL.

    Exact: token counts are ints, and each cost is already quantized to the column's scale, so
    Decimal addition loses nothing under the caller's `_EXACT` context (wide enough for any sum
    the column can hold).
    """
    figures = sums.get(key)
    if figures is None:
        figures = sums[key] = dict.fromkeys(FIGURES, 0)
        figures["estimated_cost_usd"] = Decimal(0)
    figures["calls"] += 1
    for name in _TOKEN_FIGURES:
        figures[name] += row[name]
    cost = row["estimated_cost_usd"]
    if cost is None:
        figures["unpriced_calls"] += 1
    else:
        figures["estimated_cost_usd"] += cost


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
_TOKEN_FIGURES = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)
_EXACT = Context(prec=80)


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
    return _Statements(
        insert_events=insert_events,
        add_to_counters=_adding_upsert(session, counters_table, ["tenant_id", "period", "shard"]),
        add_to_rollups=_adding_upsert(
            session, rollups_table, ["tenant_id", "day", "model", "source", "shard"]
        ),
    )


def _adding_upsert(session: AsyncSession, table: Any, key: list[str]) -> Any:
    """INSERT of a row of figures that, when its key exists, adds them to the stored row."""
    upsert = dialect_insert(session, table)
    return upsert.on_conflict_do_update(
        index_elements=key,
        set_={
            **{name: table.c[name] + upsert.excluded[name] for name in FIGURES},
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

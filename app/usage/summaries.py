"""Usage summaries: whole UTC days from the daily rollups, partial days from the events."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Date, bindparam, cast, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.usage.exceptions import InvalidUsageInput
from app.usage.models import CostType
from app.usage.schemas import GroupBy, UsageBucket, UsageFigures, UsageSummary
from app.usage.service import (
    FIGURES,
    current_quota,
    event_aggregates,
    events_table,
    rollups_table,
    utc_day,
)

DEFAULT_RANGE = timedelta(days=30)
# "At most a year": 366 days, so a leap year fits.
MAX_RANGE = timedelta(days=366)


@dataclass(frozen=True)
class SummaryRange:
    start: datetime
    end: datetime


def parse_range(
    raw_from: str | None,
    raw_to: str | None,
    *,
    now: datetime,
    limit: timedelta | None = MAX_RANGE,
) -> SummaryRange:
    """[from, to) in UTC. A date-only `to` includes that whole day; defaults: the last 30 days;
    at most `limit` long (None: no limit)."""
    end = _parse_instant(raw_to, "query.to", end_of_day=True) if raw_to else now
    if raw_from:
        start = _parse_instant(raw_from, "query.from", end_of_day=False)
    else:
        try:
            start = end - DEFAULT_RANGE
        except OverflowError:
            raise InvalidUsageInput("query.to", "is out of range") from None
    if end <= start:
        raise InvalidUsageInput("query.to", "must be after 'from'")
    if limit is not None and end - start > limit:
        raise InvalidUsageInput("query.to", "the range may span at most a year (366 days)")
    return SummaryRange(start=start, end=end)


def _parse_instant(raw: str, field: str, *, end_of_day: bool) -> datetime:
    try:
        return _parse_valid_instant(raw, field, end_of_day=end_of_day)
    except OverflowError:
        # Within the calendar but not once moved to UTC or past the day: 9999-12-31 as `to`.
        raise InvalidUsageInput(field, "is out of range") from None


def _parse_valid_instant(raw: str, field: str, *, end_of_day: bool) -> datetime:
    with contextlib.suppress(ValueError):
        day = date.fromisoformat(raw)
        start_of_day = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start_of_day + timedelta(days=1) if end_of_day else start_of_day
    moment: datetime | None = None
    # An unencoded "+02:00" in a query string arrives as " 02:00": try that reading second.
    for candidate in (raw, raw.replace(" ", "+")):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(candidate)
            break
    if moment is None:
        raise InvalidUsageInput(
            field, "must be an ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T00:00:00Z"
        )
    # Naive times are UTC, as documented.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# A summary's breakdown dimensions: a column of the rollups, and its value for a raw event.
Dimension = str
DAY, MODEL, SOURCE = "day", "model", "source"


def _dimension_of(group_by: GroupBy) -> Dimension:
    return {GroupBy.model: MODEL, GroupBy.source: SOURCE, GroupBy.day: DAY}[group_by]


@dataclass(frozen=True)
class _Split:
    """A range cut into the whole UTC days the rollups answer and the raw edges around them."""

    days: tuple[date, date] | None  # [first, last) whole days, or None when there is none
    raw: list[tuple[datetime, datetime]]  # [start, end) instants read from the events


def split_range(window: SummaryRange) -> _Split:
    first_midnight = _midnight(window.start)
    if first_midnight < window.start:
        first_midnight += timedelta(days=1)
    last_midnight = _midnight(window.end)
    if first_midnight >= last_midnight:
        return _Split(days=None, raw=[(window.start, window.end)])
    raw = [
        (start, end)
        for start, end in ((window.start, first_midnight), (last_midnight, window.end))
        if start < end
    ]
    return _Split(days=(first_midnight.date(), last_midnight.date()), raw=raw)


def _midnight(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC)


async def aggregate(
    session: AsyncSession,
    tenant_id: str,
    window: SummaryRange,
    dimensions: Sequence[Dimension],
    *,
    use_rollups: bool = True,
) -> list[dict[str, Any]]:
    """The tenant's figures over [start, end) grouped by `dimensions`, one dict per group
    (the dimensions' values under their names, then FIGURES), with `total_*` window sums.

    Whole UTC days come from the daily rollups, the partial days at the edges from the events;
    `use_rollups=False` reads every event (the reference the rollups are tested and measured
    against).
    """
    split = split_range(window) if use_rollups else _Split(None, [(window.start, window.end)])
    # The statement depends only on the range's shape; its instants and days are parameters, so
    # it is built once per shape (building it cost more Python time than PostgreSQL took to run
    # it) and stays one prepared statement.
    one_day = tuple(DAY in dimensions and _within_one_day(start, end) for start, end in split.raw)
    shape = (
        session.get_bind().dialect.name,
        tuple(dimensions),
        one_day,
        split.days is not None,
    )
    statement = _AGGREGATES.get(shape)
    if statement is None:
        statement = _AGGREGATES[shape] = _build_aggregate(session, dimensions, one_day, split)
    parameters: dict[str, Any] = {"tenant_id": tenant_id}
    for i, (start, end) in enumerate(split.raw):
        parameters[f"raw_start_{i}"], parameters[f"raw_end_{i}"] = start, end
        if one_day[i]:
            parameters[f"raw_day_{i}"] = start.astimezone(UTC).date()
    if split.days is not None:
        parameters["first_day"], parameters["end_day"] = split.days
    rows = (await session.execute(statement, parameters)).mappings().all()
    return [dict(row) for row in rows]


_AGGREGATES: dict[tuple[Any, ...], Any] = {}


def _within_one_day(start: datetime, end: datetime) -> bool:
    return _midnight(start) == _midnight(end - timedelta(microseconds=1))


def _build_aggregate(
    session: AsyncSession,
    dimensions: Sequence[Dimension],
    one_day: tuple[bool, ...],
    split: _Split,
) -> Any:
    parts = [_raw_part(session, i, dimensions, within) for i, within in enumerate(one_day)]
    if split.days is not None:
        parts.append(_rollup_part(dimensions))
    union = parts[0].subquery() if len(parts) == 1 else parts[0].union_all(*parts[1:]).subquery()
    keys = [union.c[name] for name in dimensions]
    sums: dict[str, ColumnElement[Any]] = {name: func.sum(union.c[name]) for name in FIGURES}
    return select(
        *keys,
        *[_typed(name, expr).label(name) for name, expr in sums.items()],
        # The totals ride on every group's row as window sums over the groups: no second pass.
        *[
            _typed(name, func.sum(expr).over()).label(f"total_{name}")
            for name, expr in sums.items()
        ],
    ).group_by(*keys)


def _raw_part(
    session: AsyncSession, index: int, dimensions: Sequence[Dimension], one_day: bool
) -> Any:
    """The events of the range's `index`-th raw edge, [raw_start_i, raw_end_i), grouped."""
    ev = events_table.c
    columns: dict[Dimension, ColumnElement[Any]] = {MODEL: ev.model, SOURCE: ev.source}
    grouped = [name for name in dimensions if name != DAY]
    if DAY in dimensions:
        if one_day:
            # An edge of the range lies within one UTC day: its day is a constant, and grouping
            # by it would only make PostgreSQL sort every row for a single group.
            columns[DAY] = bindparam(f"raw_day_{index}", type_=Date())
        else:
            columns[DAY] = utc_day(session, ev.occurred_at)
            grouped.append(DAY)
    return (
        select(
            *[columns[name].label(name) for name in dimensions],
            *[expr.label(name) for name, expr in event_aggregates().items()],
        )
        .where(
            ev.tenant_id == bindparam("tenant_id"),
            ev.occurred_at >= bindparam(f"raw_start_{index}"),
            ev.occurred_at < bindparam(f"raw_end_{index}"),
        )
        .group_by(*[columns[name] for name in grouped])
        # Without a grouped column the aggregate answers one row even for no events at all.
        .having(func.count() > 0)
    )


def _rollup_part(dimensions: Sequence[Dimension]) -> Any:
    """The rollups of the range's whole days, [first_day, end_day), grouped."""
    rollup = rollups_table.c
    keys = [rollup[name] for name in dimensions]
    return (
        select(
            *[key.label(key.name) for key in keys],
            *[func.sum(rollup[name]).label(name) for name in FIGURES],
        )
        .where(
            rollup.tenant_id == bindparam("tenant_id"),
            rollup.day >= bindparam("first_day"),
            rollup.day < bindparam("end_day"),
        )
        .group_by(*keys)
    )


def _figures_of(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {name: row[f"{prefix}{name}"] for name in FIGURES}


async def summarize(
    session: AsyncSession,
    settings: Settings,
    tenant_id: str,
    window: SummaryRange,
    group_by: GroupBy,
    *,
    now: datetime,
    use_rollups: bool = True,
) -> UsageSummary:
    """Totals and one bucket per model, source or day: rollups for the whole days of the range,
    events for its partial days, added up in one statement."""
    dimension = _dimension_of(group_by)
    rows = await aggregate(session, tenant_id, window, [dimension], use_rollups=use_rollups)
    buckets = [UsageBucket(key=_key_text(row[dimension]), **_figures_of(row)) for row in rows]
    if group_by is GroupBy.day:
        buckets.sort(key=lambda bucket: bucket.key)
    else:
        buckets.sort(key=lambda bucket: (-bucket.total_tokens, bucket.key))
    totals = (
        UsageFigures(**_figures_of(rows[0], "total_"))
        if rows
        else UsageFigures(**{name: 0 for name in FIGURES})
    )
    return UsageSummary(
        tenant_id=tenant_id,
        from_=window.start,
        to=window.end,
        group_by=group_by,
        totals=totals,
        breakdown=buckets,
        current_period=await current_quota(session, settings, tenant_id, now=now),
    )


@dataclass(frozen=True)
class DailyModelUsage:
    """One UTC day's usage of one model: what a chart stacked by model draws."""

    day: date
    model: str
    figures: UsageFigures


async def daily_usage_by_model(
    session: AsyncSession, tenant_id: str, start: datetime, end: datetime
) -> list[DailyModelUsage]:
    """The tenant's usage over [start, end) per UTC day and model, in day then model order
    (days without usage are absent). Same rules as the summary: at most a year, rollups for the
    whole days."""
    window = SummaryRange(start=start.astimezone(UTC), end=end.astimezone(UTC))
    if window.end <= window.start:
        raise InvalidUsageInput("end", "must be after start")
    if window.end - window.start > MAX_RANGE:
        raise InvalidUsageInput("end", "the range may span at most a year (366 days)")
    rows = await aggregate(session, tenant_id, window, [DAY, MODEL])
    usage = [
        DailyModelUsage(
            day=_as_date(row[DAY]), model=row[MODEL], figures=UsageFigures(**_figures_of(row))
        )
        for row in rows
    ]
    return sorted(usage, key=lambda item: (item.day, item.model))


def _typed(name: str, expr: ColumnElement[Any]) -> ColumnElement[Any]:
    # Sums of BIGINT are NUMERIC on PostgreSQL and costs are REAL on SQLite: give each figure
    # its type back (integers, and Decimals quantized to the cost scale).
    if name == "estimated_cost_usd":
        return type_coerce(func.coalesce(expr, 0), CostType)
    return cast(func.coalesce(expr, 0), BigInteger)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _key_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)

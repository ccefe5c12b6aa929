"""Daily rollups: written with the events, summaries built from them equal the events' sums."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core import migrations
from app.state import app_state
from app.usage import service, summaries
from app.usage.prices import COST_QUANTUM, PriceTable
from app.usage.schemas import UsageEventIn
from tests.conftest import IS_POSTGRES, PG_ADMIN_URL, _pg_admin
from tests.usage.conftest import Post, Summary, event_body

# Twelve whole UTC days ending two days ago, so every event is in the past whatever the hour.
SPAN_END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
SPAN_START = SPAN_END - timedelta(days=12)
MODELS = ["gpt-4o", "gpt-4o-mini", "o3-mini", "in-house-model"]  # the last one has no price
SOURCES = ["ai_reply", "ai_agent", "assistant"]
# Offsets the range's edges are written in: whole hours, half and quarter hours, both signs.
OFFSETS = [
    timedelta(hours=h, minutes=m)
    for h, m in ((0, 0), (5, 30), (-8, 0), (14, 0), (-3, -30), (5, 45))
]
FIGURES = ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "unpriced_calls")


def _random_events(rng: random.Random, count: int) -> list[dict[str, Any]]:
    span = (SPAN_END - SPAN_START).total_seconds()
    return [
        event_body(
            model=rng.choice(MODELS),
            source=rng.choice(SOURCES),
            prompt_tokens=rng.randrange(0, 5000),
            completion_tokens=rng.randrange(0, 2000),
            request_id=None,
            occurred_at=(SPAN_START + timedelta(seconds=rng.uniform(0, span))).isoformat(),
        )
        for _ in range(count)
    ]


def _expected(
    events: list[dict[str, Any]], prices: PriceTable, start: datetime, end: datetime, key: str
) -> dict[str, tuple[Any, ...]]:
    """The raw aggregation, done here from the events as sent."""
    groups: dict[str, list[Any]] = {}
    for event in events:
        moment = datetime.fromisoformat(event["occurred_at"])
        if not start <= moment < end:
            continue
        name = moment.date().isoformat() if key == "day" else event[key]
        cost = prices.cost_of(event["model"], event["prompt_tokens"], event["completion_tokens"])
        figures = groups.setdefault(name, [0, 0, 0, 0, 0, Decimal(0)])
        figures[0] += 1
        figures[1] += event["prompt_tokens"]
        figures[2] += event["completion_tokens"]
        figures[3] += event["prompt_tokens"] + event["completion_tokens"]
        figures[4] += cost is None
        figures[5] += cost or 0
    return {name: tuple(figures) for name, figures in groups.items()}


def _answered(body: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        bucket["key"]: (
            *(bucket[name] for name in FIGURES),
            Decimal(bucket["estimated_cost_usd"]),
        )
        for bucket in body["breakdown"]
    }


def _random_edge(rng: random.Random) -> datetime:
    # Anywhere from a day before the events to a day after, to the microsecond sometimes, in
    # some other time zone.
    span = (SPAN_END - SPAN_START).total_seconds() + 2 * 86400
    moment = SPAN_START - timedelta(days=1) + timedelta(seconds=rng.uniform(0, span))
    if rng.random() < 0.3:
        moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)  # a UTC midnight
    elif rng.random() < 0.5:
        moment = moment.replace(microsecond=0)
    return moment.astimezone(timezone(rng.choice(OFFSETS)))


async def test_rollup_summaries_equal_the_raw_aggregation_for_random_ranges(
    app: Any, post_usage: Post, summary: Summary
) -> None:
    rng = random.Random(17)
    events = _random_events(rng, 600)
    for start in range(0, len(events), 200):
        assert (await post_usage(events[start : start + 200])).status_code == 201
    # Another tenant's events in the same days must not leak into tenant-a's rollups.
    other = [{**event, "tenant_id": "tenant-b"} for event in _random_events(rng, 50)]
    prices = app_state(app).usage_prices
    async with app_state(app).sessionmaker() as session, session.begin():
        await service.record_events(session, prices, _parse(other), now=datetime.now(UTC))

    for _ in range(60):
        start, end = sorted([_random_edge(rng), _random_edge(rng)])
        if end - start < timedelta(minutes=1):
            continue
        group_by = rng.choice(["model", "day", "source"])
        body = await summary(
            **{"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by}
        )
        expected = _expected(events, prices, start, end, group_by)
        assert _answered(body) == expected, (start, end, group_by)
        totals = body["totals"]
        assert totals["calls"] == sum(figures[0] for figures in expected.values())
        assert Decimal(totals["estimated_cost_usd"]) == sum(
            (figures[5] for figures in expected.values()), Decimal(0)
        )


def _parse(bodies: list[dict[str, Any]]) -> list[UsageEventIn]:
    return [UsageEventIn(**body) for body in bodies]


async def test_whole_days_are_read_from_the_rollups_and_edges_from_the_events(
    app: Any, post_usage: Post, summary: Summary
) -> None:
    # A rollup row with no event behind it shows where each part of the range is read from.
    day = SPAN_START.date()
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            service.rollups_table.insert().values(
                tenant_id="tenant-a",
                day=day,
                model="rollup-only",
                source="ai_reply",
                shard=0,
                calls=7,
                prompt_tokens=70,
                completion_tokens=0,
                total_tokens=70,
                estimated_cost_usd=Decimal(0),
                unpriced_calls=7,
                updated_at=datetime.now(UTC),
            )
        )
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    whole = await summary(
        **{"from": midnight.isoformat(), "to": (midnight + timedelta(days=1)).isoformat()}
    )
    assert whole["totals"]["calls"] == 7
    # Noon to noon covers no whole day of that date: only events are read, and there are none.
    partial = await summary(
        **{
            "from": (midnight + timedelta(hours=12)).isoformat(),
            "to": (midnight + timedelta(hours=36)).isoformat(),
        }
    )
    assert partial["totals"]["calls"] == 0


async def test_an_event_adds_to_its_days_rollup_once(app: Any, post_usage: Post) -> None:
    moment = (SPAN_START + timedelta(hours=23, minutes=59)).isoformat()
    body = event_body(request_id="once", occurred_at=moment, prompt_tokens=10, completion_tokens=5)
    assert (await post_usage(body)).status_code == 201
    assert (await post_usage(body)).status_code == 200  # a repeat adds nothing
    async with app_state(app).sessionmaker() as session:
        rows = (
            await session.execute(
                text("SELECT day, model, source, calls, total_tokens FROM usage_daily_rollups")
            )
        ).all()
    assert [(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows] == [
        (SPAN_START.date().isoformat(), "gpt-4o", "ai_reply", 1, 15)
    ]


async def test_daily_usage_by_model_gives_each_day_and_model(app: Any, post_usage: Post) -> None:
    first, second = SPAN_START + timedelta(hours=6), SPAN_START + timedelta(days=1, hours=6)
    await post_usage(
        [
            event_body(
                model="gpt-4o", occurred_at=first.isoformat(), prompt_tokens=1, completion_tokens=0
            ),
            event_body(
                model="gpt-4o-mini",
                occurred_at=first.isoformat(),
                prompt_tokens=2,
                completion_tokens=0,
            ),
            event_body(
                model="gpt-4o", occurred_at=second.isoformat(), prompt_tokens=3, completion_tokens=0
            ),
        ]
    )
    async with app_state(app).sessionmaker() as session:
        usage = await summaries.daily_usage_by_model(
            session, "tenant-a", SPAN_START, SPAN_START + timedelta(days=7)
        )
    assert [(u.day, u.model, u.figures.total_tokens) for u in usage] == [
        (first.date(), "gpt-4o", 1),
        (first.date(), "gpt-4o-mini", 2),
        (second.date(), "gpt-4o", 3),
    ]


@pytest.fixture
def scratch_database_url(tmp_path: Path) -> Iterator[str]:
    if IS_POSTGRES:
        name = f"junction_rollups_{uuid.uuid4().hex[:10]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"


def test_the_migration_backfills_rollups_from_existing_events(scratch_database_url: str) -> None:
    migrations.upgrade(scratch_database_url, "0010")
    insert = (
        "INSERT INTO usage_events (id, tenant_id, model, source, prompt_tokens, completion_tokens,"
        " total_tokens, estimated_cost_usd, occurred_at, period, recorded_at) VALUES"
        " (:id, 't', 'gpt-4o', 'ai_reply', :p, 0, :p, :cost, :at, '2026-11', :at)"
    )
    # Two events on 2026-11-03 (UTC; its first and last minute), one at midnight on the 4th.
    rows = [
        {"id": "a", "p": 10, "cost": Decimal("0.1"), "at": datetime(2026, 11, 3, 0, 0, tzinfo=UTC)},
        {
            "id": "b",
            "p": 20,
            "cost": Decimal("0.2"),
            "at": datetime(2026, 11, 3, 23, 59, tzinfo=UTC),
        },
        {"id": "c", "p": 40, "cost": None, "at": datetime(2026, 11, 4, 0, 0, tzinfo=UTC)},
    ]

    async def seed_and_read() -> list[Any]:
        engine = create_async_engine(scratch_database_url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                for row in rows:
                    stored_at: Any = row["at"]
                    cost: Any = row["cost"]
                    if not IS_POSTGRES:  # SQLite keeps UTC and decimals as text, as the app does
                        stored_at = stored_at.strftime("%Y-%m-%d %H:%M:%S.%f")
                        cost = None if cost is None else str(cost)
                    await conn.execute(text(insert), {**row, "at": stored_at, "cost": cost})
            await asyncio.to_thread(migrations.upgrade, scratch_database_url)
            async with engine.connect() as conn:
                result = await conn.execute(
                    text(
                        "SELECT day, calls, total_tokens, estimated_cost_usd, unpriced_calls"
                        " FROM usage_daily_rollups ORDER BY day"
                    )
                )
                return [tuple(r) for r in result]
        finally:
            await engine.dispose()

    result = asyncio.run(seed_and_read())
    assert [
        (str(day), calls, tokens, Decimal(str(cost)).quantize(COST_QUANTUM), unpriced)
        for day, calls, tokens, cost, unpriced in result
    ] == [
        (date(2026, 11, 3).isoformat(), 2, 30, Decimal("0.3"), 0),
        (date(2026, 11, 4).isoformat(), 1, 40, Decimal("0"), 1),
    ]

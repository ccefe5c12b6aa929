"""Counters and idempotency under concurrent writers on PostgreSQL, across two app instances."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.core.config import Settings
from app.state import app_state
from app.usage import service
from app.usage.prices import PriceTable
from app.usage.schemas import UsageEventIn
from tests.conftest import TokenFactory, bearer, postgres_only, running_app
from tests.usage.conftest import Summary, event_body

pytestmark = postgres_only


@postgres_only
async def test_hundred_concurrent_events_add_up_exactly(
    settings: Settings, make_token: TokenFactory, summary: Summary
) -> None:
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    async with running_app(settings) as (_, first), running_app(settings) as (_, second):
        responses = await asyncio.gather(
            *(
                (first if i % 2 else second).post(
                    "/usage/openai",
                    json=event_body(prompt_tokens=i, completion_tokens=1, model="gpt-4o"),
                    headers=headers,
                )
                for i in range(1, 101)
            )
        )
    assert [r.status_code for r in responses] == [201] * 100
    body = await summary()
    assert body["current_period"]["used"] == {"tokens": 5050 + 100, "calls": 100}
    # cost: (5050 * 2.50 + 100 * 10.00) / 1e6
    assert Decimal(body["totals"]["estimated_cost_usd"]) == Decimal("0.013625")


@postgres_only
async def test_concurrent_repeats_of_one_request_id_record_one_event(
    settings: Settings, make_token: TokenFactory, summary: Summary
) -> None:
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    body = event_body(request_id="same-call", prompt_tokens=10, completion_tokens=10)
    async with running_app(settings) as (_, first), running_app(settings) as (_, second):
        responses = await asyncio.gather(
            *(
                (first if i % 2 else second).post("/usage/openai", json=body, headers=headers)
                for i in range(20)
            )
        )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert (await summary())["current_period"]["used"] == {"tokens": 20, "calls": 1}


@postgres_only
async def test_concurrent_batches_add_up_exactly(
    settings: Settings, make_token: TokenFactory, summary: Summary
) -> None:
    headers = bearer(make_token(tenants=["tenant-a", "tenant-b"], roles=["service"]))
    batch = [
        event_body(tenant_id=tenant, request_id=None, prompt_tokens=1, completion_tokens=0)
        for tenant in ("tenant-b", "tenant-a")
        for _ in range(50)
    ]
    async with running_app(settings) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/usage/openai", json=batch, headers=headers) for _ in range(10))
        )
    assert [r.status_code for r in responses] == [201] * 10
    assert (await summary("tenant-a"))["current_period"]["used"] == {"tokens": 500, "calls": 500}
    assert (await summary("tenant-b"))["current_period"]["used"] == {"tokens": 500, "calls": 500}


@postgres_only
async def test_batches_sharing_request_ids_in_opposite_orders_do_not_deadlock(
    app: Any, summary: Summary
) -> None:
    # At the service level, so both inserts reach PostgreSQL at the same moment.
    prices = PriceTable.from_settings(app_state(app).settings)
    events = [
        UsageEventIn(**event_body(request_id=f"r{i}", prompt_tokens=1, completion_tokens=0))
        for i in range(5000)
    ]

    async def record(batch: list[UsageEventIn]) -> None:
        async with app_state(app).sessionmaker() as session, session.begin():
            await service.record_events(
                session, app_state(app).settings, prices, batch, now=datetime.now(UTC)
            )

    await record([UsageEventIn(**event_body(request_id=None))])  # the workspace row exists
    await asyncio.gather(record(events), record(list(reversed(events))))
    assert (await summary())["current_period"]["used"]["calls"] == 5001

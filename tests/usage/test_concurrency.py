"""Counters and idempotency under concurrent writers on PostgreSQL, across two app instances."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from app.core.config import Settings
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

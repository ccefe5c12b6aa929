"""Budget alerts: thresholds per workspace, each crossing recorded once per period as a
`usage_threshold_crossed` event, delivered by the webhooks, exact under concurrent writers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.monitoring.models import MonitoringEvent
from app.state import app_state
from tests.conftest import TokenFactory, bearer, postgres_only, running_app
from tests.monitoring.conftest import Receiver, serve_receiver
from tests.monitoring.webhook_helpers import dispatcher, register
from tests.usage.conftest import Post, event_body

ALERTS = "/api/admin/workspaces/tenant-a/usage/alerts"
# The free tier: 100,000 tokens and 1,000 calls a month.


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve_receiver()


def tokens(count: int, **extra: Any) -> dict[str, Any]:
    return event_body(prompt_tokens=count, completion_tokens=0, **extra)


async def crossings(app: Any, tenant: str = "tenant-a") -> list[dict[str, Any]]:
    async with app_state(app).sessionmaker() as session:
        events = await session.scalars(
            select(MonitoringEvent)
            .where(MonitoringEvent.tenant_id == tenant)
            .where(MonitoringEvent.type == "usage_threshold_crossed")
        )
        found = [event.details or {} for event in events]
    return sorted(found, key=lambda d: (d["period"], d["metric"], d["percent"]))


def percents(found: list[dict[str, Any]], metric: str = "tokens") -> list[int]:
    return [d["percent"] for d in found if d["metric"] == metric]


async def test_a_workspace_starts_with_the_default_thresholds(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = (await client.get(ALERTS, headers=admin_headers)).json()
    assert body == {"tenant_id": "tenant-a", "percents": [50, 80, 100], "is_default": True}


async def test_an_admin_replaces_the_thresholds(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    put = await client.put(ALERTS, json={"percents": [90, 25, 90, 150]}, headers=admin_headers)
    assert put.status_code == 200
    assert put.json()["percents"] == [25, 90, 150]
    body = (await client.get(ALERTS, headers=admin_headers)).json()
    assert (body["percents"], body["is_default"]) == ([25, 90, 150], False)


@pytest.mark.parametrize("percents", [[0], [1001], ["50"], [12.5], list(range(1, 12))], ids=str)
async def test_a_threshold_out_of_bounds_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], percents: list[Any]
) -> None:
    response = await client.put(ALERTS, json={"percents": percents}, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"].startswith("percents")


async def test_thresholds_need_an_admin_of_the_tenant(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    service = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    other_admin = bearer(make_token(tenants=["tenant-b"], roles=["admin"]))
    assert (await client.put(ALERTS, json={"percents": [1]}, headers=service)).status_code == 403
    assert (await client.get(ALERTS, headers=other_admin)).status_code == 403


async def test_crossing_a_threshold_records_one_event_with_its_figures(
    app: Any, post_usage: Post
) -> None:
    await post_usage(tokens(49_999))
    assert await crossings(app) == []
    await post_usage(tokens(2))
    [crossing] = await crossings(app)
    period = datetime.now(UTC).strftime("%Y-%m")
    assert crossing["metric"] == "tokens" and crossing["percent"] == 50
    assert (crossing["threshold"], crossing["limit"], crossing["used"]) == (50_000, 100_000, 50_001)
    assert (crossing["period"], crossing["tier"]) == (period, "free")
    assert crossing["resets_at"].startswith(
        (datetime.now(UTC).replace(day=1) + timedelta(days=32)).strftime("%Y-%m-01")
    )


async def test_a_threshold_fires_once_per_period(app: Any, post_usage: Post) -> None:
    for _ in range(3):
        await post_usage(tokens(30_000))  # 30k, 60k (50%), 90k (80%)
    await post_usage(tokens(5_000))
    assert percents(await crossings(app)) == [50, 80]


async def test_one_event_may_cross_several_thresholds(app: Any, post_usage: Post) -> None:
    await post_usage(tokens(120_000))
    assert percents(await crossings(app)) == [50, 80, 100]


async def test_calls_have_their_own_thresholds(app: Any, post_usage: Post) -> None:
    await post_usage([tokens(0, request_id=None) for _ in range(500)])
    found = await crossings(app)
    assert (percents(found, "calls"), percents(found, "tokens")) == ([50], [])


async def test_a_repeated_request_id_crosses_nothing(app: Any, post_usage: Post) -> None:
    body = tokens(40_000, request_id="same")
    await post_usage(body)
    await post_usage(body)
    assert await crossings(app) == []


async def test_each_period_has_its_own_crossings(app: Any, post_usage: Post) -> None:
    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=3)
    await post_usage(tokens(60_000, occurred_at=last_month.isoformat()))
    await post_usage(tokens(60_000))
    assert [(d["period"], d["percent"]) for d in await crossings(app)] == [
        (last_month.strftime("%Y-%m"), 50),
        (datetime.now(UTC).strftime("%Y-%m"), 50),
    ]


async def test_no_thresholds_no_events(
    app: Any, client: httpx.AsyncClient, admin_headers: dict[str, str], post_usage: Post
) -> None:
    await client.put(ALERTS, json={"percents": []}, headers=admin_headers)
    await post_usage(tokens(120_000))
    assert await crossings(app) == []


async def test_a_crossing_is_delivered_by_the_tenants_webhook(
    app: Any,
    client: httpx.AsyncClient,
    make_token: TokenFactory,
    receiver: Receiver,
    post_usage: Post,
) -> None:
    await register(client, make_token, receiver.url)
    await post_usage(tokens(50_000))
    await dispatcher(app).run_once()
    [request] = receiver.requests
    payload = json.loads(request.body)
    assert payload["type"] == "usage_threshold_crossed"
    assert payload["data"]["tenant_id"] == "tenant-a"
    assert payload["data"]["details"]["percent"] == 50


async def test_other_tenants_usage_crosses_nothing_here(
    app: Any, post_usage: Post, admin_headers: dict[str, str]
) -> None:
    await post_usage(tokens(60_000, tenant_id="tenant-b"), admin_headers)
    assert await crossings(app) == []
    assert percents(await crossings(app, "tenant-b")) == [50]


@postgres_only
async def test_concurrent_writers_on_two_replicas_cross_each_threshold_exactly_once(
    settings: Settings, make_token: TokenFactory, admin_headers: dict[str, str]
) -> None:
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    steps = list(range(10, 101, 10))
    async with running_app(settings) as (app, first), running_app(settings) as (_, second):
        put = await first.put(ALERTS, json={"percents": steps}, headers=admin_headers)
        assert put.status_code == 200
        responses = await asyncio.gather(
            *(
                (first if i % 2 else second).post(
                    "/usage/openai", json=tokens(1_000, request_id=None), headers=headers
                )
                for i in range(100)
            )
        )
        assert [r.status_code for r in responses] == [201] * 100
        found = await crossings(app)
    # 100 x 1,000 tokens: every tenth of the 100,000 once; 100 calls: 10% of 1,000 once.
    assert percents(found) == steps
    assert percents(found, "calls") == [10]
    # Each was recorded by the transaction whose total reached it (a group commit of several
    # events may reach several at once).
    assert all(d["used"] >= d["threshold"] for d in found)

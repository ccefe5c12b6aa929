"""GET /api/admin/workspaces/{tenant_id}/usage: totals, buckets, ranges, access, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import TokenFactory, bearer
from tests.usage.conftest import Post, Summary, event_body

# A fixed past day at noon UTC, so day buckets are predictable whatever the time of the run.
DAY = (datetime.now(UTC) - timedelta(days=10)).replace(hour=12, minute=0, second=0, microsecond=0)


def at(days: float = 0, hours: float = 0) -> str:
    return (DAY + timedelta(days=days, hours=hours)).isoformat()


def day_key(days: int = 0) -> str:
    return (DAY + timedelta(days=days)).date().isoformat()


async def _seed(post_usage: Post) -> list[dict[str, Any]]:
    events = [
        event_body(
            model="gpt-4o",
            source="ai_reply",
            prompt_tokens=1000,
            completion_tokens=500,
            occurred_at=at(0),
        ),
        event_body(
            model="gpt-4o-mini",
            source="ai_agent",
            prompt_tokens=1234,
            completion_tokens=567,
            occurred_at=at(0, hours=3),
        ),
        event_body(
            model="gpt-4o",
            source="assistant",
            prompt_tokens=200,
            completion_tokens=100,
            occurred_at=at(1),
        ),
        event_body(
            model="mystery-model",
            source="ai_reply",
            prompt_tokens=7,
            completion_tokens=3,
            occurred_at=at(2),
        ),
    ]
    response = await post_usage(events)
    assert response.status_code == 201
    return events


def _figures(bucket: dict[str, Any]) -> tuple[int, int, int, int, Decimal, int]:
    return (
        bucket["calls"],
        bucket["prompt_tokens"],
        bucket["completion_tokens"],
        bucket["total_tokens"],
        Decimal(bucket["estimated_cost_usd"]),
        bucket["unpriced_calls"],
    )


async def test_totals_equal_the_sum_of_the_events(post_usage: Post, summary: Summary) -> None:
    events = await _seed(post_usage)
    totals = (await summary())["totals"]
    prompt = sum(e["prompt_tokens"] for e in events)
    completion = sum(e["completion_tokens"] for e in events)
    # 0.0075 (gpt-4o) + 0.0005253 (gpt-4o-mini) + 0.0015 (gpt-4o); the unknown model adds nothing
    cost = Decimal("0.0075") + Decimal("0.0005253") + Decimal("0.0015")
    assert _figures(totals) == (4, prompt, completion, prompt + completion, cost, 1)


async def test_group_by_model_gives_one_bucket_per_model(
    post_usage: Post, summary: Summary
) -> None:
    await _seed(post_usage)
    body = await summary(group_by="model")
    buckets = {b["key"]: _figures(b) for b in body["breakdown"]}
    assert buckets == {
        "gpt-4o": (2, 1200, 600, 1800, Decimal("0.009"), 0),
        "gpt-4o-mini": (1, 1234, 567, 1801, Decimal("0.0005253"), 0),
        "mystery-model": (1, 7, 3, 10, Decimal(0), 1),
    }


async def test_group_by_source_gives_one_bucket_per_source(
    post_usage: Post, summary: Summary
) -> None:
    await _seed(post_usage)
    body = await summary(group_by="source")
    calls = {b["key"]: (b["calls"], b["total_tokens"]) for b in body["breakdown"]}
    assert calls == {"ai_reply": (2, 1510), "ai_agent": (1, 1801), "assistant": (1, 300)}


async def test_group_by_day_gives_utc_days_in_order(post_usage: Post, summary: Summary) -> None:
    await _seed(post_usage)
    body = await summary(group_by="day")
    assert [(b["key"], b["calls"]) for b in body["breakdown"]] == [
        (day_key(0), 2),
        (day_key(1), 1),
        (day_key(2), 1),
    ]


async def test_day_buckets_follow_utc_not_the_callers_offset(
    post_usage: Post, summary: Summary
) -> None:
    # 23:30 at -05:00 is 04:30 the next day in UTC.
    local = DAY.replace(hour=23, minute=30).replace(tzinfo=None).isoformat() + "-05:00"
    await post_usage(event_body(occurred_at=local))
    body = await summary(group_by="day")
    assert [b["key"] for b in body["breakdown"]] == [day_key(1)]


async def test_range_is_from_inclusive_to_exclusive(post_usage: Post, summary: Summary) -> None:
    await _seed(post_usage)
    body = await summary(**{"from": at(0, hours=3), "to": at(2)})
    assert body["totals"]["calls"] == 2  # the 15:00 event and the next day's; not the day-2 one


async def test_date_only_to_includes_that_whole_day(post_usage: Post, summary: Summary) -> None:
    await _seed(post_usage)
    body = await summary(**{"from": day_key(0), "to": day_key(1)})
    assert body["totals"]["calls"] == 3


async def test_offset_whose_plus_arrived_as_a_space_is_understood(
    post_usage: Post, summary: Summary
) -> None:
    await _seed(post_usage)
    start = (DAY + timedelta(hours=2, minutes=59)).replace(tzinfo=None).isoformat()
    # "...T14:59:00+00:00" typed into a URL unencoded reaches the server as "...T14:59:00 00:00".
    body = await summary(**{"from": start + " 00:00", "to": at(2)})
    assert body["totals"]["calls"] == 2


async def test_other_tenants_events_are_not_counted(
    post_usage: Post, summary: Summary, admin_headers: dict[str, str]
) -> None:
    await post_usage(event_body(tenant_id="tenant-a"))
    await post_usage(event_body(tenant_id="tenant-b"), admin_headers)
    assert (await summary("tenant-a"))["totals"]["calls"] == 1


async def test_empty_range_gives_zero_totals_and_no_buckets(summary: Summary) -> None:
    body = await summary()
    assert body["breakdown"] == []
    assert _figures(body["totals"]) == (0, 0, 0, 0, Decimal(0), 0)


async def test_default_range_is_the_last_thirty_days(summary: Summary) -> None:
    body = await summary()
    start = datetime.fromisoformat(body["from"])
    end = datetime.fromisoformat(body["to"])
    assert end - start == timedelta(days=30)
    assert body["group_by"] == "model"


async def test_summary_shows_current_period_against_tier_limits(
    client: httpx.AsyncClient, post_usage: Post, summary: Summary, admin_headers: dict[str, str]
) -> None:
    await client.put("/api/admin/workspaces/tenant-a", json={"tier": "pro"}, headers=admin_headers)
    await post_usage(event_body(prompt_tokens=600, completion_tokens=400))
    period = (await summary())["current_period"]
    assert period["tier"] == "pro"
    assert period["period"] == datetime.now(UTC).strftime("%Y-%m")
    assert period["limits"] == {"tokens": 5_000_000, "calls": 50_000}
    assert period["used"] == {"tokens": 1000, "calls": 1}
    assert period["remaining"] == {"tokens": 4_999_000, "calls": 49_999}


async def _get(
    client: httpx.AsyncClient, headers: dict[str, str], tenant_id: str = "tenant-a", **params: str
) -> httpx.Response:
    return await client.get(
        f"/api/admin/workspaces/{tenant_id}/usage", params=params, headers=headers
    )


async def test_unknown_group_by_is_refused_naming_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await _get(client, admin_headers, group_by="hour")
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "query.group_by"


async def test_from_after_to_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await _get(client, admin_headers, **{"from": "2026-03-10", "to": "2026-03-01"})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "query.to"


async def test_range_over_a_year_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await _get(client, admin_headers, **{"from": "2025-01-01", "to": "2026-01-03"})
    assert response.status_code == 422
    assert "year" in response.json()["detail"]


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "01/02/2026"])
async def test_date_that_is_not_iso_8601_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], value: str
) -> None:
    response = await _get(client, admin_headers, **{"from": value})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "query.from"


async def test_summary_needs_the_admin_role(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    assert (await _get(client, headers)).status_code == 403


async def test_admin_of_other_tenants_is_forbidden(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(tenants=["tenant-b"], roles=["admin"]))
    assert (await _get(client, headers)).status_code == 403


@pytest.mark.parametrize(
    ("field", "params"),
    [
        ("query.to", {"to": "9999-12-31"}),
        ("query.to", {"to": "0001-01-01"}),
        ("query.from", {"from": "0001-01-01T00:00:00+01:00", "to": "0001-01-02"}),
    ],
)
async def test_date_at_the_edge_of_the_calendar_is_refused_not_a_crash(
    client: httpx.AsyncClient, admin_headers: dict[str, str], field: str, params: dict[str, str]
) -> None:
    response = await _get(client, admin_headers, **params)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == field

"""Monitoring events: written on a status change, listed per tenant, newest first, paginated."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx

from app.core.db import utcnow
from app.monitoring import service
from app.state import app_state
from app.tokens.context import StatusChange
from tests.conftest import bearer
from tests.monitoring.factories import list_event_rows, make_event


def status_change(previous: str, new: str, reason: str | None = "invalid_grant") -> StatusChange:
    return StatusChange(
        tenant_id="tenant-a",
        provider="wix",
        branch_id="branch-9",
        connection_id="c" * 32,
        previous_status=previous,
        new_status=new,
        reason=reason,
        occurred_at=utcnow(),
    )


async def record(app: Any, change: StatusChange) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        await service.record_status_change(session, change)


async def test_change_to_needs_reauth_records_a_needs_reauth_event(app: Any) -> None:
    await record(app, status_change("active", "needs_reauth"))
    [event] = await list_event_rows(app)
    assert (event.type, event.provider, event.branch_id, event.reason) == (
        "needs_reauth",
        "wix",
        "branch-9",
        "invalid_grant",
    )


async def test_return_to_active_records_a_recovered_event(app: Any) -> None:
    await record(app, status_change("refresh_failed", "active", reason="refreshed"))
    [event] = await list_event_rows(app)
    assert event.type == "recovered"


async def test_failure_after_failure_records_nothing(app: Any) -> None:
    await record(app, status_change("refresh_failed", "refresh_failed", reason="http_500"))
    assert await list_event_rows(app) == []


async def test_events_are_listed_newest_first(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    now = utcnow()
    await make_event(app, type="refresh_failed", occurred_at=now - timedelta(minutes=2))
    await make_event(app, type="recovered", occurred_at=now - timedelta(minutes=1))
    response = await client.get("/monitoring/events", headers=bearer(make_token()))
    assert response.status_code == 200
    body = response.json()
    assert [item["type"] for item in body["items"]] == ["recovered", "refresh_failed"]
    assert set(body["items"][0]) == {
        "type",
        "provider",
        "branch_id",
        "occurred_at",
        "reason",
        "client_id",
        "details",  # null for a connection's event; set on usage_threshold_crossed
    }
    assert body["next_cursor"] is None


async def test_events_of_other_tenants_are_not_listed(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    await make_event(app, tenant_id="tenant-b")
    response = await client.get("/monitoring/events", headers=bearer(make_token()))
    assert response.json()["items"] == []


async def test_listing_a_tenant_the_caller_lacks_is_forbidden(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/monitoring/events", params={"tenant_id": "tenant-b"}, headers=bearer(make_token())
    )
    assert response.status_code == 403


async def test_since_leaves_out_older_events(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    now = utcnow()
    await make_event(app, type="needs_reauth", occurred_at=now - timedelta(hours=2))
    await make_event(app, type="recovered", occurred_at=now - timedelta(minutes=5))
    since = (now - timedelta(hours=1)).isoformat()
    response = await client.get(
        "/monitoring/events", params={"since": since}, headers=bearer(make_token())
    )
    assert [item["type"] for item in response.json()["items"]] == ["recovered"]


async def test_cursor_pages_through_every_event_once(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    now = utcnow()
    made = {await make_event(app, occurred_at=now - timedelta(seconds=i)) for i in range(5)}
    # Two events at the same instant must still both be listed exactly once.
    made.add(await make_event(app, occurred_at=now - timedelta(seconds=2)))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (
            await client.get("/monitoring/events", params=params, headers=bearer(make_token()))
        ).json()
        seen.extend(item["occurred_at"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(made) == 6
    assert pages == 3
    assert seen == sorted(seen, reverse=True)


async def test_malformed_cursor_is_a_clear_400(client: httpx.AsyncClient, make_token: Any) -> None:
    response = await client.get(
        "/monitoring/events", params={"cursor": "not-a-cursor"}, headers=bearer(make_token())
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cursor"


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_a_cursor_whose_time_leaves_the_calendar_in_utc_is_a_400(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    cursor = _cursor(b'{"t": "0001-01-01T00:00:00+01:00", "i": "x"}')
    response = await client.get(
        "/monitoring/events", params={"cursor": cursor}, headers=bearer(make_token())
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cursor"


async def test_a_cursor_id_holding_a_lone_surrogate_is_a_400(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    cursor = _cursor(b'{"t": "2026-01-01T00:00:00+00:00", "i": "\\ud800"}')
    response = await client.get(
        "/monitoring/events", params={"cursor": cursor}, headers=bearer(make_token())
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cursor"


async def test_limit_above_the_maximum_is_refused(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/monitoring/events", params={"limit": 1000}, headers=bearer(make_token())
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "query.limit"


async def test_events_need_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/monitoring/events")
    assert response.status_code == 401


async def test_a_since_out_of_range_in_utc_is_a_422(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/monitoring/events",
        params={"since": "0001-01-01T00:00:00+01:00"},
        headers=bearer(make_token(roles=["service"])),
    )
    assert response.status_code == 422
    assert "since" in response.json()["detail"]

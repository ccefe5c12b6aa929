"""The delivery log (GET /monitoring/webhook/deliveries) and redelivery, per tenant."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.core.db import utcnow
from tests.conftest import bearer
from tests.monitoring.conftest import Receiver
from tests.monitoring.webhook_helpers import (
    dispatcher,
    drive_until_settled,
    raise_event,
    register,
    service_token,
)

LOG = "/monitoring/webhook/deliveries"


async def log(client: httpx.AsyncClient, make_token: Any, **params: Any) -> Any:
    response = await client.get(LOG, params=params, headers=service_token(make_token))
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_log_shows_each_delivery_with_its_event_attempts_and_outcome(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    receiver.statuses = [500]
    failing = await raise_event(app, type="refresh_failed", reason="http_503")
    now = utcnow()
    await dispatcher(app).run_once(now=now)
    delivered = await raise_event(app, type="recovered", reason="refreshed")
    await dispatcher(app).run_once(now=now + timedelta(seconds=1))
    page = await log(client, make_token)
    newest, oldest = page["items"]
    assert page["next_cursor"] is None
    assert (newest["event"]["id"], newest["event"]["type"]) == (delivered, "recovered")
    assert (newest["status"], newest["attempts"], newest["last_status_code"]) == (
        "delivered",
        1,
        200,
    )
    assert newest["delivered_at"] is not None and newest["next_attempt_at"] is None
    assert (oldest["event"]["id"], oldest["status"], oldest["attempts"]) == (
        failing,
        "pending",
        1,
    )
    assert (oldest["last_status_code"], oldest["last_error"]) == (500, "http_500")
    assert oldest["next_attempt_at"] > oldest["last_attempt_at"]
    assert set(newest["event"]) == {
        "id",
        "type",
        "tenant_id",
        "provider",
        "branch_id",
        "occurred_at",
    }
    # The id is the webhook-id the receiver saw.
    assert newest["id"] == receiver.requests[-1].webhook_id


async def test_the_log_filters_by_status_and_by_event_type(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    await raise_event(app, type="needs_reauth")
    await dispatcher(app).run_once()
    receiver.statuses = [410]  # gives up at once
    await raise_event(app, type="refresh_failed")
    await dispatcher(app).run_once()
    await register(client, make_token, receiver.url)  # enabled again after the 410
    pending = await raise_event(app, type="refresh_failed")
    by_status = {
        status: [
            item["event"]["type"]
            for item in (await log(client, make_token, status=status))["items"]
        ]
        for status in ("pending", "delivered", "failed")
    }
    assert by_status == {
        "pending": ["refresh_failed"],
        "delivered": ["needs_reauth"],
        "failed": ["refresh_failed"],
    }
    failed_only = await log(client, make_token, event_type="refresh_failed", status="pending")
    assert [item["event"]["id"] for item in failed_only["items"]] == [pending]
    assert (await log(client, make_token, event_type="recovered"))["items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"event_type": "exploded"}, "event_type"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
    ],
)
async def test_a_bad_filter_is_a_422_naming_it(
    client: httpx.AsyncClient, make_token: Any, params: dict[str, Any], field: str
) -> None:
    response = await client.get(LOG, params=params, headers=service_token(make_token))
    assert response.status_code == 422, response.text
    assert field in response.json()["fields"][0]["field"]


async def test_pages_follow_the_cursor_without_repeats_or_gaps(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    for _ in range(5):
        await raise_event(app)
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await log(client, make_token, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    everything = await log(client, make_token, limit=200)
    assert seen == [item["id"] for item in everything["items"]]


async def test_a_malformed_cursor_is_a_400(client: httpx.AsyncClient, make_token: Any) -> None:
    response = await client.get(
        LOG, params={"cursor": "not-a-cursor"}, headers=service_token(make_token)
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_cursor")


async def test_a_tenant_sees_only_its_own_webhooks_deliveries(
    app: Any,
    client: httpx.AsyncClient,
    make_token: Any,
    receiver: Receiver,
    other_receiver: Receiver,
) -> None:
    await register(client, make_token, receiver.url, tenant="tenant-a")
    await register(client, make_token, other_receiver.url, tenant="tenant-b")
    await raise_event(app, tenant="tenant-a")
    response = await client.get(LOG, headers=service_token(make_token, "tenant-b"))
    assert response.json()["items"] == []
    response = await client.get(
        LOG, params={"tenant_id": "tenant-a"}, headers=service_token(make_token, "tenant-b")
    )
    assert response.status_code == 403


async def test_a_member_without_a_role_may_read_the_log_but_not_redeliver(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    await raise_event(app)
    member = bearer(make_token())
    [item] = (await client.get(LOG, headers=member)).json()["items"]
    response = await client.post(f"{LOG}/{item['id']}/redeliver", headers=member)
    assert response.status_code == 403


# --- redelivery ------------------------------------------------------------------------------


async def test_a_delivered_event_is_sent_again_with_the_same_webhook_id(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    await raise_event(app)
    await dispatcher(app).run_once()
    [item] = (await log(client, make_token))["items"]
    response = await client.post(f"{LOG}/{item['id']}/redeliver", headers=service_token(make_token))
    assert response.status_code == 200, response.text
    queued = response.json()
    assert (queued["id"], queued["status"], queued["attempts"]) == (item["id"], "pending", 0)
    await dispatcher(app).run_once()
    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id == item["id"]
    [again] = (await log(client, make_token))["items"]
    assert (again["status"], again["attempts"]) == ("delivered", 1)


async def test_a_given_up_delivery_is_redelivered_with_a_new_schedule(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    receiver.statuses = [503] * 40
    await register(client, make_token, receiver.url)
    await raise_event(app)
    await drive_until_settled(app, utcnow())
    [item] = (await log(client, make_token, status="failed"))["items"]
    receiver.statuses = []
    response = await client.post(f"{LOG}/{item['id']}/redeliver", headers=service_token(make_token))
    assert response.json()["status"] == "pending"
    await dispatcher(app).run_once()
    [item] = (await log(client, make_token))["items"]
    assert (item["status"], item["attempts"], item["last_error"]) == ("delivered", 1, None)


async def test_another_tenants_delivery_id_is_a_404(
    app: Any,
    client: httpx.AsyncClient,
    make_token: Any,
    receiver: Receiver,
    other_receiver: Receiver,
) -> None:
    await register(client, make_token, receiver.url, tenant="tenant-a")
    await register(client, make_token, other_receiver.url, tenant="tenant-b")
    await raise_event(app, tenant="tenant-a")
    [item] = (await log(client, make_token))["items"]
    for delivery_id in (item["id"], "0" * 32):
        response = await client.post(
            f"{LOG}/{delivery_id}/redeliver", headers=service_token(make_token, "tenant-b")
        )
        assert (response.status_code, response.json()["error"]) == (404, "delivery_not_found")
    await dispatcher(app).run_once()
    assert other_receiver.requests == []


async def test_redelivery_to_a_disabled_webhook_is_a_409(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = await register(client, make_token, receiver.url)
    await raise_event(app)
    await dispatcher(app).run_once()
    await register(client, make_token, receiver.url, secret=secret, enabled=False)
    [item] = (await log(client, make_token))["items"]
    response = await client.post(f"{LOG}/{item['id']}/redeliver", headers=service_token(make_token))
    assert (response.status_code, response.json()["error"]) == (409, "webhook_not_active")

"""The operator webhook: an admin of every tenant receives every tenant's events, besides each
tenant's own webhook, and reads its own delivery log; no tenant sees or changes it."""

from __future__ import annotations

from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from tests.conftest import bearer
from tests.monitoring.conftest import Receiver
from tests.monitoring.webhook_helpers import (
    deliveries,
    dispatcher,
    operator_token,
    raise_event,
    register,
    register_operator,
    service_token,
)

OPERATOR = "/monitoring/operator-webhook"


async def test_an_event_goes_to_the_tenants_webhook_and_to_the_operators(
    app: Any,
    client: httpx.AsyncClient,
    make_token: Any,
    receiver: Receiver,
    other_receiver: Receiver,
) -> None:
    tenant_secret = await register(client, make_token, receiver.url)
    operator_secret = await register_operator(client, make_token, other_receiver.url)
    event_id = await raise_event(app)
    await dispatcher(app).run_once()
    [to_tenant] = receiver.requests
    [to_operator] = other_receiver.requests
    assert (
        Webhook(tenant_secret).verify(to_tenant.body, to_tenant.headers)["data"]["event_id"]
        == event_id
    )
    payload = Webhook(operator_secret).verify(to_operator.body, to_operator.headers)
    assert (payload["data"]["event_id"], payload["data"]["tenant_id"]) == (event_id, "tenant-a")
    # Two messages, one per webhook: each has its own webhook-id.
    assert to_tenant.webhook_id != to_operator.webhook_id


async def test_the_operator_receives_events_of_tenants_without_a_webhook(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = await register_operator(client, make_token, receiver.url)
    await raise_event(app, tenant="tenant-a")
    await raise_event(app, tenant="tenant-b")
    await dispatcher(app).run_once()
    payloads = [Webhook(secret).verify(r.body, r.headers) for r in receiver.requests]
    assert sorted(p["data"]["tenant_id"] for p in payloads) == ["tenant-a", "tenant-b"]


async def test_the_operator_reads_and_redelivers_its_own_log(
    app: Any,
    client: httpx.AsyncClient,
    make_token: Any,
    receiver: Receiver,
    other_receiver: Receiver,
) -> None:
    await register(client, make_token, receiver.url)
    await register_operator(client, make_token, other_receiver.url)
    event_id = await raise_event(app)
    await dispatcher(app).run_once()
    response = await client.get(f"{OPERATOR}/deliveries", headers=operator_token(make_token))
    assert response.status_code == 200, response.text
    [item] = response.json()["items"]
    assert (item["event"]["id"], item["event"]["tenant_id"]) == (event_id, "tenant-a")
    assert item["status"] == "delivered"
    response = await client.post(
        f"{OPERATOR}/deliveries/{item['id']}/redeliver", headers=operator_token(make_token)
    )
    assert response.status_code == 200 and response.json()["status"] == "pending"
    await dispatcher(app).run_once()
    assert len(other_receiver.requests) == 2 and len(receiver.requests) == 1


async def test_a_tenant_neither_sees_nor_redelivers_the_operators_deliveries(
    app: Any,
    client: httpx.AsyncClient,
    make_token: Any,
    receiver: Receiver,
    other_receiver: Receiver,
) -> None:
    await register(client, make_token, receiver.url)
    await register_operator(client, make_token, other_receiver.url)
    await raise_event(app)
    tenant_log = await client.get(
        "/monitoring/webhook/deliveries", headers=service_token(make_token)
    )
    [own] = tenant_log.json()["items"]
    operator_log = await client.get(f"{OPERATOR}/deliveries", headers=operator_token(make_token))
    [operators] = operator_log.json()["items"]
    assert own["id"] != operators["id"]
    response = await client.post(
        f"/monitoring/webhook/deliveries/{operators['id']}/redeliver",
        headers=service_token(make_token),
    )
    assert response.status_code == 404


async def test_no_tenant_caller_may_read_or_change_the_operator_webhook(
    client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register_operator(client, make_token, receiver.url)
    callers = {
        "tenant service": service_token(make_token),
        "tenant admin": bearer(make_token(["tenant-a"], roles=["admin", "service"])),
        "service of every tenant": bearer(make_token(["*"], roles=["service"])),
    }
    for name, headers in callers.items():
        for method, path, body in [
            ("GET", OPERATOR, None),
            ("PUT", OPERATOR, {"url": "http://127.0.0.1:9/steal"}),
            ("DELETE", OPERATOR, None),
            ("GET", f"{OPERATOR}/deliveries", None),
        ]:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, f"{name}: {method} {path}: {response.text}"
    kept = await client.get(OPERATOR, headers=operator_token(make_token))
    assert kept.json()["url"] == receiver.url


async def test_the_operator_webhook_is_not_a_tenant_id(
    client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    response = await client.put(
        "/monitoring/webhook",
        params={"tenant_id": "*"},
        json={"url": receiver.url},
        headers=operator_token(make_token),
    )
    assert response.status_code == 422


async def test_removing_a_tenants_webhook_keeps_the_operators_pending_deliveries(
    app: Any,
    client: httpx.AsyncClient,
    make_token: Any,
    receiver: Receiver,
    other_receiver: Receiver,
) -> None:
    await register(client, make_token, receiver.url)
    await register_operator(client, make_token, other_receiver.url)
    await raise_event(app)
    response = await client.delete("/monitoring/webhook", headers=service_token(make_token))
    assert response.status_code == 204
    [left] = await deliveries(app)
    assert left.webhook_tenant_id == "*"
    await dispatcher(app).run_once()
    assert len(other_receiver.requests) == 1 and receiver.requests == []


async def test_the_operator_webhook_is_removed_with_its_pending_deliveries(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register_operator(client, make_token, receiver.url)
    await raise_event(app)
    response = await client.delete(OPERATOR, headers=operator_token(make_token))
    assert response.status_code == 204
    assert await deliveries(app) == []
    response = await client.get(OPERATOR, headers=operator_token(make_token))
    assert (response.status_code, response.json()["error"]) == (404, "webhook_not_found")

"""Webhook delivery of monitoring events to a real local receiver: signed, retried, per tenant."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.auth import mint_token
from app.core.crypto import Keyring
from app.devtools.http_server import BackgroundHTTPServer
from app.monitoring import service
from app.monitoring.models import MonitoringWebhookDelivery
from app.monitoring.webhooks import MAX_ATTEMPTS
from app.state import app_state
from tests.conftest import bearer, build_settings, running_app
from tests.monitoring.test_events import status_change
from tests.monitoring.test_loop import eventually


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records every POST and answers the queued statuses."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    yield from _serve()


def _serve() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Received(dict(self.headers.items()), body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with BackgroundHTTPServer(Handler) as server:
        state.url = f"{server.base_url}/hooks/junction"
        yield state


def service_token(make_token: Any, tenant: str = "tenant-a") -> dict[str, str]:
    return bearer(make_token(tenants=[tenant], roles=["service"]))


async def register(
    client: httpx.AsyncClient, make_token: Any, url: str, tenant: str = "tenant-a"
) -> str:
    response = await client.put(
        "/monitoring/webhook", json={"url": url}, headers=service_token(make_token, tenant)
    )
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


async def raise_event(app: Any, tenant: str = "tenant-a") -> None:
    change = status_change("active", "needs_reauth")
    change = type(change)(**{**change.__dict__, "tenant_id": tenant})
    async with app_state(app).sessionmaker() as session, session.begin():
        await service.record_status_change(session, change)


async def deliveries(app: Any) -> list[MonitoringWebhookDelivery]:
    async with app_state(app).sessionmaker() as session:
        return list(await session.scalars(select(MonitoringWebhookDelivery)))


def signature_is_valid(secret: str, request: Received) -> bool:
    signed = request.headers["X-Junction-Timestamp"].encode() + b"." + request.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.headers["X-Junction-Signature"])


async def test_an_event_is_delivered_once_with_a_verifiable_signature(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = await register(client, make_token, receiver.url)
    await raise_event(app)
    await app_state(app).monitoring.webhooks.run_once()
    await app_state(app).monitoring.webhooks.run_once()
    [request] = receiver.requests
    assert signature_is_valid(secret, request)
    payload = json.loads(request.body)
    assert payload["type"] == "needs_reauth" and payload["tenant_id"] == "tenant-a"
    assert set(payload) == {
        "type",
        "provider",
        "branch_id",
        "occurred_at",
        "reason",
        "tenant_id",
        "event_id",
    }
    assert request.headers["X-Junction-Event-Id"] == payload["event_id"]
    [delivery] = await deliveries(app)
    assert delivery.delivered_at is not None and delivery.attempts == 1


async def test_a_failing_receiver_is_retried_after_backoff_and_then_succeeds(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    await register(client, make_token, receiver.url)
    await raise_event(app)
    await app_state(app).monitoring.webhooks.run_once()
    [failed] = await deliveries(app)
    assert (failed.attempts, failed.last_error, failed.delivered_at) == (1, "http_500", None)
    await app_state(app).monitoring.webhooks.run_once()  # still within the backoff: not sent again
    assert len(receiver.requests) == 1
    assert failed.next_attempt_at is not None
    await app_state(app).monitoring.webhooks.run_once(now=failed.next_attempt_at)
    assert len(receiver.requests) == 2
    [delivered] = await deliveries(app)
    assert delivered.delivered_at is not None and delivered.attempts == 2


async def test_delivery_gives_up_after_the_last_attempt(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    receiver.statuses = [503] * (MAX_ATTEMPTS + 2)
    await register(client, make_token, receiver.url)
    await raise_event(app)
    await app_state(app).monitoring.webhooks.run_once()
    for _ in range(MAX_ATTEMPTS + 1):
        [delivery] = await deliveries(app)
        if delivery.next_attempt_at is None:
            break
        await app_state(app).monitoring.webhooks.run_once(now=delivery.next_attempt_at)
    [delivery] = await deliveries(app)
    assert len(receiver.requests) == MAX_ATTEMPTS
    assert delivery.next_attempt_at is None and delivery.delivered_at is None
    assert delivery.last_error == "gave_up:http_503"


async def test_another_tenants_webhook_never_receives_the_event(
    app: Any,
    client: httpx.AsyncClient,
    make_token: Any,
    receiver: Receiver,
    other_receiver: Receiver,
) -> None:
    await register(client, make_token, receiver.url, tenant="tenant-a")
    await register(client, make_token, other_receiver.url, tenant="tenant-b")
    await raise_event(app, tenant="tenant-a")
    await app_state(app).monitoring.webhooks.run_once()
    assert len(receiver.requests) == 1
    assert other_receiver.requests == []


async def test_an_event_without_a_webhook_queues_nothing(app: Any) -> None:
    await raise_event(app)
    assert await deliveries(app) == []


async def test_a_rolled_back_status_change_queues_no_delivery(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    async with app_state(app).sessionmaker() as session:
        await service.record_status_change(session, status_change("active", "needs_reauth"))
        await session.rollback()
    assert await deliveries(app) == []


async def test_a_generated_secret_is_shown_once_and_masked_afterwards(
    client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = await register(client, make_token, receiver.url)
    response = await client.get("/monitoring/webhook", headers=service_token(make_token))
    assert response.status_code == 200
    body = response.json()
    assert body["secret"] == "****" + secret[-4:]
    assert secret not in response.text
    assert (body["url"], body["enabled"]) == (receiver.url, True)


async def test_a_given_secret_is_used_and_never_echoed(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = "my-own-signing-secret-0123456789"
    response = await client.put(
        "/monitoring/webhook",
        json={"url": receiver.url, "secret": secret},
        headers=service_token(make_token),
    )
    assert response.status_code == 200
    assert secret not in response.text
    await raise_event(app)
    await app_state(app).monitoring.webhooks.run_once()
    assert signature_is_valid(secret, receiver.requests[0])


async def test_the_secret_never_reaches_the_logs(
    app: Any,
    client: httpx.AsyncClient,
    make_token: Any,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.statuses = [500]
    secret = await register(client, make_token, receiver.url)
    await client.get("/monitoring/webhook", headers=service_token(make_token))
    await raise_event(app)
    await app_state(app).monitoring.webhooks.run_once()
    assert caplog.records
    assert secret not in caplog.text


async def test_registering_needs_the_service_or_admin_role(
    client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    response = await client.put(
        "/monitoring/webhook", json={"url": receiver.url}, headers=bearer(make_token())
    )
    assert response.status_code == 403


async def test_a_tenant_the_caller_lacks_is_forbidden(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/monitoring/webhook?tenant_id=tenant-b", headers=service_token(make_token)
    )
    assert response.status_code == 403


async def test_a_deleted_webhook_is_gone_and_its_pending_deliveries_too(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    await raise_event(app)
    response = await client.delete("/monitoring/webhook", headers=service_token(make_token))
    assert response.status_code == 204
    response = await client.get("/monitoring/webhook", headers=service_token(make_token))
    assert response.status_code == 404
    assert await deliveries(app) == []


async def test_a_non_http_url_is_refused(client: httpx.AsyncClient, make_token: Any) -> None:
    response = await client.put(
        "/monitoring/webhook",
        json={"url": "ftp://example.com/hook"},
        headers=service_token(make_token),
    )
    assert response.status_code == 422
    assert "url" in response.text


# --- outside development ---------------------------------------------------------------------


@pytest.fixture
async def staging(database_url: str) -> Any:
    settings = build_settings(
        database_url,
        environment="staging",
        auth_jwt_secret="staging-secret-" + "s" * 40,
        encryption_keys=Keyring.generate_key(),
    )
    async with running_app(settings) as (_, client):
        token = mint_token(settings, sub="svc", tenants=["tenant-a"], roles=["service"])
        yield client, bearer(token)


async def test_an_http_url_is_refused_outside_dev(staging: Any, receiver: Receiver) -> None:
    client, headers = staging
    response = await client.put("/monitoring/webhook", json={"url": receiver.url}, headers=headers)
    assert response.status_code == 422
    assert "https" in response.json()["detail"]


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/hook", "https://10.1.2.3/hook", "https://localhost:8443/hook"]
)
async def test_a_private_url_is_refused_outside_dev(staging: Any, url: str) -> None:
    client, headers = staging
    response = await client.put("/monitoring/webhook", json={"url": url}, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"] == "unsafe_destination"
    assert (await client.get("/monitoring/webhook", headers=headers)).status_code == 404


async def test_a_disabled_webhook_queues_nothing(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    response = await client.put(
        "/monitoring/webhook",
        json={"url": receiver.url, "enabled": False},
        headers=service_token(make_token),
    )
    assert response.status_code == 200
    await raise_event(app)
    assert await deliveries(app) == []


async def test_the_running_dispatcher_delivers_without_being_driven(
    database_url: str, make_token: Any, receiver: Receiver
) -> None:
    settings = build_settings(database_url, monitor_enabled=True, monitor_interval_s=0.1)
    async with running_app(settings) as (app, client):
        await register(client, make_token, receiver.url)
        await raise_event(app)
        await eventually(lambda: len(receiver.requests) == 1)

"""Webhook delivery of monitoring events to a real local receiver: Standard Webhooks signatures
verified with the `standardwebhooks` package, the retry schedule, registration rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.auth import mint_token
from app.core.crypto import Keyring
from app.core.db import utcnow
from app.monitoring import service, webhooks
from app.monitoring.models import MonitoringWebhook
from app.monitoring.webhook_delivery import MAX_ATTEMPTS, backoff_s
from app.state import app_state
from tests.conftest import bearer, build_settings, free_port, running_app
from tests.monitoring.conftest import Received, Receiver
from tests.monitoring.test_events import status_change
from tests.monitoring.test_loop import eventually
from tests.monitoring.webhook_helpers import (
    deliveries,
    dispatcher,
    drive_until_settled,
    raise_event,
    register,
    service_token,
)

DAY = timedelta(hours=24)


def whsec(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


def verified(secret: str | bytes, request: Received) -> Any:
    """The payload, once the package has checked the signature (raises otherwise)."""
    return Webhook(secret).verify(request.body, request.headers)


# --- the message -----------------------------------------------------------------------------


async def test_an_event_is_delivered_once_and_verifies_with_the_standard_webhooks_package(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = await register(client, make_token, receiver.url)
    event_id = await raise_event(app)
    await dispatcher(app).run_once()
    await dispatcher(app).run_once()
    [request] = receiver.requests
    payload = verified(secret, request)
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["type"] == "needs_reauth"
    assert payload["data"] == {
        "event_id": event_id,
        "tenant_id": "tenant-a",
        "provider": "wix",
        "branch_id": "branch-9",
        "connection_id": "c" * 32,
        "client_id": None,
        "reason": "invalid_grant",
        "occurred_at": payload["timestamp"],
    }
    [delivery] = await deliveries(app)
    assert request.webhook_id == delivery.id
    assert request.headers["content-type"] == "application/json"
    assert not [name for name in request.headers if name.startswith("x-junction")]
    assert delivery.delivered_at is not None and delivery.attempts == 1


async def test_a_changed_body_or_another_secret_fails_verification(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = await register(client, make_token, receiver.url)
    await raise_event(app)
    await dispatcher(app).run_once()
    [request] = receiver.requests
    tampered = Received(request.headers, request.body.replace(b"needs_reauth", b"recovered"))
    with pytest.raises(WebhookVerificationError):
        verified(secret, tampered)
    with pytest.raises(WebhookVerificationError):
        verified(whsec(), request)


async def test_the_webhook_id_stays_the_same_across_retries(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    secret = await register(client, make_token, receiver.url)
    await raise_event(app)
    await drive_until_settled(app, utcnow())
    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id
    assert verified(secret, first) == verified(secret, second)


async def test_a_generated_secret_is_whsec_and_the_base64_of_32_bytes(
    client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = await register(client, make_token, receiver.url)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


async def test_a_given_secret_is_used_and_never_echoed(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = whsec(24).rstrip("=")  # unpadded base64 is accepted, as the package accepts it
    response = await client.put(
        "/monitoring/webhook",
        json={"url": receiver.url, "secret": secret},
        headers=service_token(make_token),
    )
    assert response.status_code == 200
    assert secret not in response.text and response.json()["secret_generated"] is False
    await raise_event(app)
    await dispatcher(app).run_once()
    assert verified(secret, receiver.requests[0])["type"] == "needs_reauth"


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("my-own-signing-secret-0123456789", "must start with 'whsec_'"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "base64"),
        ("whsec_" + "not base64 at all!" * 2, "base64"),
        ("whsec_" + base64.b64encode(b"k" * 16).decode(), "24 to 64 random bytes"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "24 to 64 random bytes"),
        ("whsec_" + "A" * 41, "base64"),  # a length no base64 text has
    ],
)
async def test_a_malformed_secret_is_refused_with_a_clear_422(
    client: httpx.AsyncClient, make_token: Any, receiver: Receiver, secret: str, says: str
) -> None:
    response = await client.put(
        "/monitoring/webhook",
        json={"url": receiver.url, "secret": secret},
        headers=service_token(make_token),
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["fields"]
    assert error["field"] == "secret" and says in error["message"]
    assert secret not in response.text
    assert (
        await client.get("/monitoring/webhook", headers=service_token(make_token))
    ).status_code == 404


# --- registrations made before Standard Webhooks ---------------------------------------------

LEGACY_SECRET = "my-own-signing-secret-0123456789"


async def make_legacy(app: Any, tenant: str = "tenant-a") -> None:
    """Leave the tenant's webhook as migration 0009 leaves one registered before: flagged, with
    a secret of any text."""
    keyring = app_state(app).keyring
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(MonitoringWebhook)
            .where(MonitoringWebhook.tenant_id == tenant)
            .values(
                legacy_signing=True,
                secret_enc=keyring.encrypt(LEGACY_SECRET, webhooks.secret_aad(tenant)),
            )
        )


async def test_a_legacy_registration_keeps_its_headers_and_body_beside_the_standard_ones(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    await make_legacy(app)
    event_id = await raise_event(app)
    await dispatcher(app).run_once()
    [request] = receiver.requests
    # As before: HMAC-SHA256 over "<timestamp>.<body>", keyed by the secret's text.
    signed = request.headers["x-junction-timestamp"].encode() + b"." + request.body
    expected = "sha256=" + hmac.new(LEGACY_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request.headers["x-junction-signature"])
    assert request.headers["x-junction-event-id"] == event_id
    payload = json.loads(request.body)
    assert set(payload) == {
        "type",
        "provider",
        "branch_id",
        "occurred_at",
        "reason",
        "tenant_id",
        "event_id",
    }
    # The standard headers verify too, with the secret's UTF-8 bytes as the key.
    assert verified(LEGACY_SECRET.encode(), request) == payload


async def test_a_new_put_moves_a_legacy_registration_to_standard_webhooks(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    await make_legacy(app)
    secret = await register(client, make_token, receiver.url)
    await raise_event(app)
    await dispatcher(app).run_once()
    [request] = receiver.requests
    assert "x-junction-signature" not in request.headers
    assert set(verified(secret, request)) == {"type", "timestamp", "data"}


# --- retries ---------------------------------------------------------------------------------


async def test_each_failed_attempt_records_its_time_status_code_and_error(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    secret = await register(client, make_token, receiver.url)
    await raise_event(app)
    now = utcnow()
    await dispatcher(app).run_once(now=now)
    [failed] = await deliveries(app)
    assert (failed.attempts, failed.last_status_code, failed.last_error) == (1, 500, "http_500")
    assert failed.last_attempt_at == now and failed.delivered_at is None
    assert failed.next_attempt_at is not None
    assert backoff_s(1, 0) <= (failed.next_attempt_at - now).total_seconds() <= backoff_s(1, 1)
    assert secret not in str(failed.last_error)


async def test_a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503, 502]
    await register(client, make_token, receiver.url)
    await raise_event(app)
    start = utcnow()
    await dispatcher(app).run_once(now=start)
    assert await dispatcher(app).run_once(now=start + timedelta(seconds=1)) == {}  # backing off
    sent_at = [start, *await drive_until_settled(app, start + timedelta(seconds=1))]
    assert len(receiver.requests) == 4
    for attempt, (before, after) in enumerate(zip(sent_at, sent_at[1:], strict=False), 1):
        assert backoff_s(attempt, 0) <= (after - before).total_seconds() <= backoff_s(attempt, 1)
    [delivered] = await deliveries(app)
    assert delivered.delivered_at == sent_at[-1] and delivered.attempts == 4
    assert (delivered.last_status_code, delivered.last_error) == (200, None)


def test_the_schedule_spans_at_least_24_hours_without_any_jitter() -> None:
    waits = [backoff_s(attempt, 0) for attempt in range(1, MAX_ATTEMPTS)]
    assert waits == sorted(waits)
    assert sum(waits) >= DAY.total_seconds()
    assert backoff_s(3, 0.5) == pytest.approx(backoff_s(3, 0) * 1.1)


async def test_delivery_keeps_retrying_for_24_hours_before_giving_up(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    receiver.statuses = [503] * (MAX_ATTEMPTS + 2)
    await register(client, make_token, receiver.url)
    await raise_event(app)
    sent_at = await drive_until_settled(app, utcnow())
    assert len(receiver.requests) == len(sent_at) == MAX_ATTEMPTS
    assert sent_at[-1] - sent_at[0] >= DAY
    [delivery] = await deliveries(app)
    assert webhooks.delivery_status(delivery) == "failed"
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        MAX_ATTEMPTS,
        503,
        "http_503",
    )


async def test_a_410_gone_gives_up_at_once_and_disables_the_webhook(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    receiver.statuses = [410]
    await register(client, make_token, receiver.url)
    await raise_event(app)
    await drive_until_settled(app, utcnow())
    [delivery] = await deliveries(app)
    assert len(receiver.requests) == 1
    assert (webhooks.delivery_status(delivery), delivery.last_status_code) == ("failed", 410)
    webhook = await client.get("/monitoring/webhook", headers=service_token(make_token))
    assert webhook.json()["enabled"] is False
    await raise_event(app)
    assert len(await deliveries(app)) == 1  # a disabled webhook gets no new rows


async def test_an_unreachable_receiver_is_a_connect_error_without_a_status_code(
    app: Any, client: httpx.AsyncClient, make_token: Any
) -> None:
    await register(client, make_token, f"http://127.0.0.1:{free_port()}/hook")
    await raise_event(app)
    await dispatcher(app).run_once()
    [delivery] = await deliveries(app)
    assert delivery.last_status_code is None
    assert str(delivery.last_error).startswith("connect_error:")
    assert webhooks.delivery_status(delivery) == "pending"


# --- who receives what -----------------------------------------------------------------------


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
    await dispatcher(app).run_once()
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


async def test_a_disabled_webhook_queues_nothing(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url, enabled=False)
    await raise_event(app)
    assert await deliveries(app) == []


async def test_a_webhook_disabled_after_the_event_fails_the_delivery_without_sending(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    secret = await register(client, make_token, receiver.url)
    await raise_event(app)
    await register(client, make_token, receiver.url, secret=secret, enabled=False)
    await dispatcher(app).run_once()
    assert receiver.requests == []
    [delivery] = await deliveries(app)
    assert (webhooks.delivery_status(delivery), delivery.last_error) == (
        "failed",
        "webhook_disabled",
    )


# --- registration ----------------------------------------------------------------------------


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
    await dispatcher(app).run_once()
    assert caplog.records
    assert secret not in caplog.text
    assert secret.removeprefix("whsec_") not in caplog.text


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
    assert (response.status_code, response.json()["error"]) == (404, "webhook_not_found")
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


async def test_the_running_dispatcher_delivers_without_being_driven(
    database_url: str, make_token: Any, receiver: Receiver
) -> None:
    settings = build_settings(database_url, monitor_enabled=True, monitor_interval_s=0.1)
    async with running_app(settings) as (app, client):
        await register(client, make_token, receiver.url)
        await raise_event(app)
        await eventually(lambda: len(receiver.requests) == 1)

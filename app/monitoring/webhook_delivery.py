"""Sending webhooks: the message (body and Standard Webhooks signature), the retry schedule and
the dispatcher that drains the outbox across replicas."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.core import netguard
from app.core.config import Settings
from app.core.crypto import Keyring
from app.core.db import is_postgres, utcnow
from app.monitoring.loop import instance_owner
from app.monitoring.models import MonitoringEvent, MonitoringWebhook
from app.monitoring.webhooks import Delivery, read_secret, secret_key

logger = logging.getLogger("junction.monitoring.webhooks")

# The retry schedule: 30 s after the first failure, doubling up to every 4 hours, each wait
# stretched by up to 20% of jitter (only ever longer, so the span below is a floor). The 15th
# attempt, the last, comes at least 24.26 hours after the first (about 27 on average).
RETRY_BASE_S = 30.0
RETRY_MAX_S = 4 * 3600.0
RETRY_JITTER = 0.2
MAX_ATTEMPTS = 15

DELIVERY_TIMEOUT_S = 5.0
# A leased delivery is not taken by another replica for this long; well above the timeout.
DELIVERY_LEASE_S = 60.0
DELIVERY_BATCH = 50
DELIVERY_CONCURRENCY = 8
POLL_MAX_S = 2.0

# The receiver says the endpoint is gone for good: give up and disable the webhook.
GONE = 410

# Sent, beside the standard headers, to a webhook registered before Standard Webhooks.
LEGACY_SIGNATURE_HEADER = "X-Junction-Signature"
LEGACY_TIMESTAMP_HEADER = "X-Junction-Timestamp"
LEGACY_EVENT_ID_HEADER = "X-Junction-Event-Id"


def backoff_s(attempts: int, jitter: float | None = None) -> float:
    """The wait after the `attempts`-th failed attempt; `jitter` in [0, 1) (default: random)."""
    base = min(RETRY_BASE_S * 2 ** (attempts - 1), RETRY_MAX_S)
    fraction = random.random() if jitter is None else jitter  # noqa: S311 - not a secret
    return float(base * (1 + RETRY_JITTER * fraction))


# --- the message -----------------------------------------------------------------------------


def event_data(event: MonitoringEvent) -> dict[str, object]:
    data: dict[str, object] = {
        "event_id": event.id,
        "tenant_id": event.tenant_id,
        "provider": event.provider,
        "branch_id": event.branch_id,
        "connection_id": event.connection_id,
        "client_id": event.client_id,
        "reason": event.reason,
        "occurred_at": event.occurred_at.isoformat(),
    }
    if event.details is not None:
        # Only on the events that have them (usage_threshold_crossed): the connection events'
        # body is what it was.
        data["details"] = event.details
    return data


def message_body(event: MonitoringEvent, *, legacy: bool) -> str:
    """The JSON body: `{type, timestamp, data}` as the specification recommends (`timestamp`
    is when the event occurred); the flat body of before for a legacy registration."""
    if legacy:
        payload: dict[str, object] = {
            "type": event.type,
            "provider": event.provider,
            "branch_id": event.branch_id,
            "occurred_at": event.occurred_at.isoformat(),
            "reason": event.reason,
            "tenant_id": event.tenant_id,
            "event_id": event.id,
        }
        if event.details is not None:
            payload["details"] = event.details
    else:
        payload = {
            "type": event.type,
            "timestamp": event.occurred_at.isoformat(),
            "data": event_data(event),
        }
    return json.dumps(payload, separators=(",", ":"))


def signed_headers(
    secret: str, *, message_id: str, event_id: str, body: str, sent_at: datetime, legacy: bool
) -> dict[str, str]:
    """The Standard Webhooks headers (signed with the `standardwebhooks` package), and the
    X-Junction-* ones for a legacy registration, whose secret is any text and keys the HMAC as
    its UTF-8 bytes in both signatures."""
    key = secret.encode() if legacy else secret_key(secret)
    timestamp = str(int(sent_at.timestamp()))
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": Webhook(key).sign(message_id, sent_at, body),
    }
    if legacy:
        # `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, as before.
        digest = hmac.new(key, f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
        headers[LEGACY_SIGNATURE_HEADER] = f"sha256={digest}"
        headers[LEGACY_TIMESTAMP_HEADER] = timestamp
        headers[LEGACY_EVENT_ID_HEADER] = event_id
    return headers


# --- the dispatcher --------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingDelivery:
    id: str
    attempts: int
    owner: str  # whose webhook: a tenant id, or OPERATOR_WEBHOOK
    webhook: MonitoringWebhook | None
    event: MonitoringEvent


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: a status code (None without an answer) and an error code (None on
    a 2xx), never the secret or the body."""

    status_code: int | None
    error: str | None


async def lease_due_deliveries(
    session: AsyncSession, *, owner: str, now: datetime, limit: int
) -> list[str]:
    """Claim due deliveries by pushing their next attempt out by the lease (SKIP LOCKED on PG)."""
    due = (
        select(Delivery.id)
        .where(Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
    )
    if is_postgres(session):
        due = due.with_for_update(skip_locked=True)
    candidates = due.cte("due_deliveries")
    statement = (
        update(Delivery)
        .where(Delivery.id.in_(select(candidates.c.id)))
        .values(lease_owner=owner, next_attempt_at=now + timedelta(seconds=DELIVERY_LEASE_S))
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return list((await session.scalars(statement)).all())


async def load_deliveries(session: AsyncSession, ids: list[str]) -> list[PendingDelivery]:
    statement = (
        select(Delivery, MonitoringEvent, MonitoringWebhook)
        .join(MonitoringEvent, MonitoringEvent.id == Delivery.event_id)
        .outerjoin(MonitoringWebhook, MonitoringWebhook.tenant_id == Delivery.webhook_tenant_id)
        .where(Delivery.id.in_(ids))
    )
    return [
        PendingDelivery(
            id=delivery.id,
            attempts=delivery.attempts,
            owner=delivery.webhook_tenant_id,
            webhook=webhook,
            event=event,
        )
        for delivery, event, webhook in (await session.execute(statement)).all()
    ]


class WebhookDispatcher:
    """Drains the outbox: lease, POST outside any transaction, record the outcome (owner-fenced)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        keyring: Keyring,
        http: httpx.AsyncClient,
        *,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.owner = owner or instance_owner()
        self._sessionmaker = sessionmaker
        self._keyring = keyring
        self._http = http
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(DELIVERY_CONCURRENCY)

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"webhooks:{self.owner}")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        # A POST in flight is short (DELIVERY_TIMEOUT_S); one cut off is retried after its lease.
        await self._task
        self._task = None

    async def _run(self) -> None:
        interval = min(self.settings.monitor_interval_s, POLL_MAX_S)
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("webhook delivery pass failed; retrying next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)

    async def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """One pass over the deliveries due at `now` (default: the clock); counts its outcomes.
        `now` schedules and records; the signature's timestamp is always the real clock."""
        now = now or utcnow()
        async with self._sessionmaker() as session, session.begin():
            ids = await lease_due_deliveries(
                session, owner=self.owner, now=now, limit=DELIVERY_BATCH
            )
        if not ids:
            return {}
        async with self._sessionmaker() as session:
            pending = await load_deliveries(session, ids)
        outcomes = await asyncio.gather(*(self._deliver(item, now) for item in pending))
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    async def _deliver(self, item: PendingDelivery, now: datetime) -> str:
        # The slot covers the recording too: a pass holds at most DELIVERY_CONCURRENCY database
        # connections, however large its batch.
        async with self._slots:
            return await self._deliver_in_slot(item, now)

    async def _deliver_in_slot(self, item: PendingDelivery, now: datetime) -> str:
        fenced = (Delivery.id == item.id, Delivery.lease_owner == self.owner)
        if item.webhook is None:
            # Removed after the event (its pending rows went with it, this one was leased).
            async with self._sessionmaker() as session, session.begin():
                await session.execute(delete(Delivery).where(*fenced))
            return "dropped"
        if not item.webhook.enabled:
            # Kept in the log as failed, so it can be redelivered once the webhook is enabled.
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    update(Delivery)
                    .where(*fenced)
                    .values(lease_owner=None, next_attempt_at=None, last_error="webhook_disabled")
                    .execution_options(synchronize_session=False)
                )
            return "disabled"
        attempt = await self._post(item, item.webhook)
        return await self._record(item, attempt, now)

    async def _post(self, item: PendingDelivery, webhook: MonitoringWebhook) -> Attempt:
        secret = read_secret(self._keyring, webhook)
        if secret is None:
            logger.error("a webhook secret cannot be decrypted (delivery %s)", item.id)
            return Attempt(None, "secret_unreadable")
        legacy = webhook.legacy_signing
        body = message_body(item.event, legacy=legacy)
        headers = signed_headers(
            secret,
            message_id=item.id,
            event_id=item.event.id,
            body=body,
            sent_at=utcnow(),
            legacy=legacy,
        )
        try:
            # Checked again at each delivery (DNS may have changed since registration), and sent
            # to the address checked.
            response = await netguard.post(
                self._http,
                webhook.url,
                allow_private=self.settings.is_dev,
                content=body.encode(),
                headers=headers,
                timeout=DELIVERY_TIMEOUT_S,
            )
        except netguard.UnsafeDestination:
            return Attempt(None, "unsafe_destination")
        except httpx.TimeoutException:
            return Attempt(None, "timeout")
        except httpx.HTTPError as exc:
            return Attempt(None, f"connect_error:{type(exc).__name__}"[:255])
        if 200 <= response.status_code < 300:
            return Attempt(response.status_code, None)
        return Attempt(response.status_code, f"http_{response.status_code}")

    async def _record(self, item: PendingDelivery, attempt: Attempt, now: datetime) -> str:
        attempts = item.attempts + 1
        values: dict[str, object] = {
            "attempts": attempts,
            "lease_owner": None,
            "last_attempt_at": now,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error,
        }
        gone = attempt.status_code == GONE
        if attempt.error is None:
            outcome = "delivered"
            values.update(delivered_at=now, next_attempt_at=None)
        elif gone or attempts >= MAX_ATTEMPTS:
            outcome = "gave_up"
            values.update(next_attempt_at=None)
            logger.warning(
                "webhook delivery %s gave up after %d attempts (%s)",
                item.id,
                attempts,
                attempt.error,
            )
        else:
            outcome = "retry"
            values.update(next_attempt_at=now + timedelta(seconds=backoff_s(attempts)))
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                update(Delivery)
                .where(Delivery.id == item.id, Delivery.lease_owner == self.owner)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if gone and result.rowcount:  # type: ignore[attr-defined]
                await session.execute(
                    update(MonitoringWebhook)
                    .where(MonitoringWebhook.tenant_id == item.owner)
                    .values(enabled=False, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                logger.warning("a webhook answered 410 Gone and was disabled (%s)", item.id)
        return outcome

"""Per-tenant webhooks: registration, the delivery outbox and the dispatcher that drains it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets as stdlib_secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import netguard
from app.core.config import Settings
from app.core.crypto import DecryptionError, Keyring
from app.core.db import is_postgres, new_id, utcnow
from app.core.errors import InvalidField
from app.core.secret_fields import SecretField
from app.monitoring.loop import instance_owner
from app.monitoring.models import MonitoringEvent, MonitoringWebhook, MonitoringWebhookDelivery
from app.tokens.providers import validate_url

logger = logging.getLogger("junction.monitoring.webhooks")

Delivery = MonitoringWebhookDelivery

MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 30.0  # 30 s, 1 min, 2 min, ... : eight attempts span about an hour
BACKOFF_MAX_S = 3600.0
DELIVERY_TIMEOUT_S = 5.0
# A leased delivery is not taken by another replica for this long; well above the timeout.
DELIVERY_LEASE_S = 60.0
DELIVERY_BATCH = 50
DELIVERY_CONCURRENCY = 8
POLL_MAX_S = 2.0

SIGNATURE_HEADER = "X-Junction-Signature"
TIMESTAMP_HEADER = "X-Junction-Timestamp"
EVENT_ID_HEADER = "X-Junction-Event-Id"


# --- secrets and signatures ------------------------------------------------------------------


def generate_secret() -> str:
    return "whsec_" + stdlib_secrets.token_urlsafe(32)


# The table's primary key is the tenant, so the row id is the tenant id too.
WEBHOOK_SECRET = SecretField(
    MonitoringWebhook.__tablename__, "secret_enc", "secret_enc", id_column="tenant_id"
)


def secret_aad(tenant_id: str) -> bytes:
    return WEBHOOK_SECRET.aad(tenant_id, tenant_id)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`: the timestamp is signed too, so a
    receiver that rejects old timestamps cannot be fed a replayed body with a fresh one."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def backoff_s(attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt."""
    return float(min(BACKOFF_BASE_S * 2 ** (attempts - 1), BACKOFF_MAX_S))


# --- registration ----------------------------------------------------------------------------


async def check_url(url: str, settings: Settings) -> str:
    """https (http for loopback in dev/test only); outside dev it must resolve to public hosts."""
    try:
        validate_url(url, field_name="url", allow_loopback_http=settings.is_dev)
    except ValueError as exc:
        # validate_url words its message for a field of that name: "url: must be ...".
        raise InvalidField("url", str(exc).removeprefix("url: ")) from None
    await netguard.ensure_public_destination(url, allow_private=settings.is_dev)
    return url


async def get_webhook(session: AsyncSession, tenant_id: str) -> MonitoringWebhook | None:
    return await session.get(MonitoringWebhook, tenant_id)


async def put_webhook(
    session: AsyncSession,
    keyring: Keyring,
    tenant_id: str,
    *,
    url: str,
    secret: str,
    enabled: bool,
) -> MonitoringWebhook:
    """Create or replace the tenant's webhook (PUT replaces the whole resource, secret included)."""
    now = utcnow()
    webhook = await session.get(MonitoringWebhook, tenant_id)
    secret_enc = keyring.encrypt(secret, secret_aad(tenant_id))
    if webhook is None:
        webhook = MonitoringWebhook(
            tenant_id=tenant_id,
            url=url,
            secret_enc=secret_enc,
            enabled=enabled,
            created_at=now,
            updated_at=now,
        )
        session.add(webhook)
    else:
        webhook.url, webhook.secret_enc, webhook.enabled = url, secret_enc, enabled
        webhook.updated_at = now
    await session.flush()
    return webhook


async def delete_webhook(session: AsyncSession, tenant_id: str) -> bool:
    """Remove the webhook and its pending deliveries (delivered ones stay as history)."""
    result = await session.execute(
        delete(MonitoringWebhook).where(MonitoringWebhook.tenant_id == tenant_id)
    )
    await session.execute(
        delete(Delivery).where(Delivery.tenant_id == tenant_id, Delivery.delivered_at.is_(None))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def receivers(session: AsyncSession, tenant_id: str) -> list[str]:
    """The webhooks (by owner: the tenant, or OPERATOR_WEBHOOK) that receive `tenant_id`'s
    events now: each enabled one gets an outbox row per event."""
    owners = await session.scalars(
        select(MonitoringWebhook.tenant_id).where(
            MonitoringWebhook.tenant_id == tenant_id, MonitoringWebhook.enabled.is_(True)
        )
    )
    return list(owners)


def new_delivery(tenant_id: str, event_id: str, webhook_tenant_id: str) -> Delivery:
    """The outbox row of an event for one webhook, added by the status listener to the session
    that writes the event: no event is lost between the commit and the delivery, and none is
    delivered that did not commit."""
    now = utcnow()
    return Delivery(
        id=new_id(),
        tenant_id=tenant_id,
        webhook_tenant_id=webhook_tenant_id,
        event_id=event_id,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )


# --- delivery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingDelivery:
    id: str
    attempts: int
    tenant_id: str
    url: str | None
    secret_enc: str | None
    enabled: bool
    payload: dict[str, object]


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
    pending = []
    for delivery, event, webhook in (await session.execute(statement)).all():
        pending.append(
            PendingDelivery(
                id=delivery.id,
                attempts=delivery.attempts,
                tenant_id=delivery.tenant_id,
                url=webhook.url if webhook is not None else None,
                secret_enc=webhook.secret_enc if webhook is not None else None,
                enabled=webhook is not None and webhook.enabled,
                payload={
                    "type": event.type,
                    "provider": event.provider,
                    "branch_id": event.branch_id,
                    "occurred_at": event.occurred_at.isoformat(),
                    "reason": event.reason,
                    "tenant_id": event.tenant_id,
                    "event_id": event.id,
                },
            )
        )
    return pending


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
        """One pass over the deliveries due at `now` (default: the clock); counts its outcomes."""
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
        if item.url is None or item.secret_enc is None or not item.enabled:
            # The webhook was removed or disabled after the event: nothing to deliver to.
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    delete(Delivery).where(
                        Delivery.id == item.id, Delivery.lease_owner == self.owner
                    )
                )
            return "dropped"
        async with self._slots:
            error = await self._post(item)
        await self._record(item, error, now)
        if error is None:
            return "delivered"
        return "gave_up" if item.attempts + 1 >= MAX_ATTEMPTS else "retry"

    async def _post(self, item: PendingDelivery) -> str | None:
        """POST the event; None on a 2xx, else a short error code (never the secret or the body)."""
        assert item.url is not None and item.secret_enc is not None
        try:
            secret = self._keyring.decrypt(item.secret_enc, secret_aad(item.tenant_id))
        except DecryptionError:
            logger.error("webhook secret of a tenant cannot be decrypted (delivery %s)", item.id)
            return "secret_unreadable"
        body = json.dumps(item.payload, separators=(",", ":")).encode()
        timestamp = str(int(utcnow().timestamp()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            EVENT_ID_HEADER: str(item.payload["event_id"]),
        }
        try:
            # Checked again at each delivery (DNS may have changed since registration), and sent
            # to the address checked.
            response = await netguard.post(
                self._http,
                item.url,
                allow_private=self.settings.is_dev,
                content=body,
                headers=headers,
                timeout=DELIVERY_TIMEOUT_S,
            )
        except netguard.UnsafeDestination:
            return "unsafe_destination"
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError as exc:
            return f"connect_error:{type(exc).__name__}"[:255]
        if 200 <= response.status_code < 300:
            return None
        return f"http_{response.status_code}"

    async def _record(self, item: PendingDelivery, error: str | None, now: datetime) -> None:
        attempts = item.attempts + 1
        values: dict[str, object]
        if error is None:
            values = {"delivered_at": utcnow(), "next_attempt_at": None, "last_error": None}
        elif attempts >= MAX_ATTEMPTS:
            values = {"next_attempt_at": None, "last_error": f"gave_up:{error}"[:255]}
            logger.warning(
                "webhook delivery %s gave up after %d attempts (%s)", item.id, attempts, error
            )
        else:
            retry_at = now + timedelta(seconds=backoff_s(attempts))
            values = {"next_attempt_at": retry_at, "last_error": error}
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(Delivery.id == item.id, Delivery.lease_owner == self.owner)
                .values(attempts=attempts, lease_owner=None, **values)
                .execution_options(synchronize_session=False)
            )

"""Webhooks: registration (a tenant's, and the operator's for every tenant), the outbox rows an
event gets, and the delivery log with its redelivery. Sending is app/monitoring/webhook_delivery.py.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, and_, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import netguard
from app.core.config import Settings
from app.core.crypto import DecryptionError, Keyring
from app.core.db import new_id, utcnow
from app.core.errors import InvalidField
from app.core.pagination import TimeIdCursor
from app.core.secret_fields import SecretField
from app.monitoring.exceptions import DeliveryNotFound, WebhookNotActive, WebhookNotFound
from app.monitoring.models import (
    EVENT_TYPES,
    OPERATOR_WEBHOOK,
    MonitoringEvent,
    MonitoringWebhook,
    MonitoringWebhookDelivery,
)
from app.tokens.providers import validate_url

Delivery = MonitoringWebhookDelivery

# Standard Webhooks secrets: "whsec_" and the base64 of the HMAC key; the specification asks for
# 24 to 64 random bytes.
SECRET_PREFIX = "whsec_"
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
GENERATED_SECRET_BYTES = 32

DeliveryStatus = Literal["pending", "delivered", "failed"]
STATUS_PENDING: DeliveryStatus = "pending"
STATUS_DELIVERED: DeliveryStatus = "delivered"
STATUS_FAILED: DeliveryStatus = "failed"


# --- secrets ---------------------------------------------------------------------------------


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(GENERATED_SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_<base64>` secret names; `InvalidField` (422) for anything else.

    Strict base64 (the standard alphabet, padding optional): the libraries receivers verify
    with decode the standard alphabet, and a lenient decoder skips what it does not know, so a
    loosely accepted secret could name a different key on the receiver's side.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidField("secret", f"must start with '{SECRET_PREFIX}' (Standard Webhooks)")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(
            "secret",
            f"must be '{SECRET_PREFIX}' followed by base64 (A-Z, a-z, 0-9, '+', '/', '=')",
        ) from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise InvalidField(
            "secret",
            f"must encode {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} random bytes"
            f" (this one encodes {len(key)})",
        )
    return key


# The table's primary key is the owner (a tenant, or "*"), so the row id is the owner too.
WEBHOOK_SECRET = SecretField(
    MonitoringWebhook.__tablename__, "secret_enc", "secret_enc", id_column="tenant_id"
)


def secret_aad(owner: str) -> bytes:
    return WEBHOOK_SECRET.aad(owner, owner)


def read_secret(keyring: Keyring, webhook: MonitoringWebhook) -> str | None:
    """The stored secret; None when no key of the keyring decrypts it."""
    try:
        return keyring.decrypt(webhook.secret_enc, secret_aad(webhook.tenant_id))
    except DecryptionError:
        return None


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


async def get_webhook(session: AsyncSession, owner: str) -> MonitoringWebhook:
    """`owner`'s webhook (a tenant id, or OPERATOR_WEBHOOK); `WebhookNotFound` without one."""
    webhook = await session.get(MonitoringWebhook, owner)
    if webhook is None:
        raise WebhookNotFound(_no_webhook(owner))
    return webhook


def _no_webhook(owner: str) -> str:
    if owner == OPERATOR_WEBHOOK:
        return "no operator webhook is registered"
    return "no webhook is registered for this tenant"


async def put_webhook(
    session: AsyncSession,
    keyring: Keyring,
    settings: Settings,
    owner: str,
    *,
    url: str,
    secret: str,
    enabled: bool,
) -> MonitoringWebhook:
    """Create or replace `owner`'s webhook (PUT replaces the whole resource, secret included).

    The secret must be a Standard Webhooks one (`secret_key` checks it, before the URL's DNS
    check); a replaced registration leaves the legacy signing behind.
    """
    secret_key(secret)
    url = await check_url(url, settings)
    now = utcnow()
    webhook = await session.get(MonitoringWebhook, owner)
    secret_enc = keyring.encrypt(secret, secret_aad(owner))
    if webhook is None:
        webhook = MonitoringWebhook(tenant_id=owner, created_at=now)
        session.add(webhook)
    webhook.url, webhook.secret_enc, webhook.enabled = url, secret_enc, enabled
    webhook.legacy_signing = False
    webhook.updated_at = now
    await session.flush()
    return webhook


async def delete_webhook(session: AsyncSession, owner: str) -> None:
    """Remove the webhook and its pending deliveries (delivered and failed ones stay in its log)."""
    result = await session.execute(
        delete(MonitoringWebhook).where(MonitoringWebhook.tenant_id == owner)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise WebhookNotFound(_no_webhook(owner))
    await session.execute(
        delete(Delivery).where(Delivery.webhook_tenant_id == owner, _is(STATUS_PENDING))
    )


# --- the outbox ------------------------------------------------------------------------------


async def receivers(session: AsyncSession, tenant_id: str) -> list[str]:
    """The webhooks (by owner: the tenant, and OPERATOR_WEBHOOK) that receive `tenant_id`'s
    events now: each enabled one gets an outbox row per event. One primary-key lookup."""
    owners = await session.scalars(
        select(MonitoringWebhook.tenant_id).where(
            MonitoringWebhook.tenant_id.in_((tenant_id, OPERATOR_WEBHOOK)),
            MonitoringWebhook.enabled.is_(True),
        )
    )
    return sorted(owners)


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


# --- the delivery log ------------------------------------------------------------------------


def delivery_status(delivery: Delivery) -> DeliveryStatus:
    """pending (an attempt is scheduled or under way), delivered (a 2xx), failed (given up)."""
    if delivery.delivered_at is not None:
        return STATUS_DELIVERED
    return STATUS_PENDING if delivery.next_attempt_at is not None else STATUS_FAILED


def _is(status: str) -> ColumnElement[bool]:
    """`delivery_status` as a condition, so that a filter stays in SQL."""
    if status == STATUS_DELIVERED:
        return Delivery.delivered_at.is_not(None)
    scheduled = Delivery.next_attempt_at.is_not(None)
    if status == STATUS_FAILED:
        scheduled = Delivery.next_attempt_at.is_(None)
    return and_(Delivery.delivered_at.is_(None), scheduled)


@dataclass(frozen=True)
class LoggedDelivery:
    delivery: Delivery
    event: MonitoringEvent

    @property
    def status(self) -> DeliveryStatus:
        return delivery_status(self.delivery)


async def list_deliveries(
    session: AsyncSession,
    owner: str,
    *,
    status: str | None,
    event_type: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[LoggedDelivery], str | None]:
    """`owner`'s deliveries, newest first, keyset-paginated on (created_at, id): a range of the
    (webhook_tenant_id, created_at, id) index."""
    if event_type is not None and event_type not in EVENT_TYPES:
        raise InvalidField("query.event_type", f"must be one of {', '.join(EVENT_TYPES)}")
    query = (
        select(Delivery, MonitoringEvent)
        .join(MonitoringEvent, MonitoringEvent.id == Delivery.event_id)
        .where(Delivery.webhook_tenant_id == owner)
    )
    if status is not None:
        query = query.where(_is(status))
    if event_type is not None:
        query = query.where(MonitoringEvent.type == event_type)
    if cursor:
        after = TimeIdCursor.decode(cursor)
        query = query.where(tuple_(Delivery.created_at, Delivery.id) < (after.at, after.id))
    query = query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit + 1)
    rows = [LoggedDelivery(d, e) for d, e in (await session.execute(query)).all()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1].delivery
        next_cursor = TimeIdCursor(last.created_at, last.id).encode()
    return rows, next_cursor


async def redeliver(
    session: AsyncSession, owner: str, delivery_id: str, *, now: datetime | None = None
) -> LoggedDelivery:
    """Queue one of `owner`'s deliveries again now, whatever its status, with a fresh retry
    schedule. Another owner's delivery is `DeliveryNotFound`, as an unknown id is."""
    row = (
        await session.execute(
            select(Delivery, MonitoringEvent)
            .join(MonitoringEvent, MonitoringEvent.id == Delivery.event_id)
            .where(Delivery.id == delivery_id, Delivery.webhook_tenant_id == owner)
        )
    ).one_or_none()
    if row is None:
        raise DeliveryNotFound("no such delivery in this webhook's log")
    webhook = await session.get(MonitoringWebhook, owner)
    if webhook is None or not webhook.enabled:
        raise WebhookNotActive("the webhook is disabled or removed: enable it (PUT) first")
    delivery, event = row
    # A lease in flight loses its fence: that attempt's outcome is not recorded over this.
    delivery.attempts, delivery.next_attempt_at = 0, now or utcnow()
    delivery.delivered_at, delivery.lease_owner = None, None
    await session.flush()
    return LoggedDelivery(delivery, event)

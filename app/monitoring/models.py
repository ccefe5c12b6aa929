"""Tables of the monitoring domain: the events raised when a connection changes state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, UTCDateTime, new_id, utcnow

EVENT_REFRESH_FAILED = "refresh_failed"
EVENT_NEEDS_REAUTH = "needs_reauth"
EVENT_RECOVERED = "recovered"
EVENT_CONNECTED = "connected"
EVENT_DISCONNECTED = "disconnected"
EVENT_CLIENT_MISCONFIGURED = "client_misconfigured"
EVENT_REFRESH_TOKEN_EXPIRING = "refresh_token_expiring"
# Raised by the usage domain (app/usage/alerts.py): a workspace crossed a budget threshold.
EVENT_USAGE_THRESHOLD_CROSSED = "usage_threshold_crossed"
EVENT_TYPES = (
    EVENT_REFRESH_FAILED,
    EVENT_NEEDS_REAUTH,
    EVENT_RECOVERED,
    EVENT_CONNECTED,
    EVENT_DISCONNECTED,
    EVENT_CLIENT_MISCONFIGURED,
    EVENT_REFRESH_TOKEN_EXPIRING,
    EVENT_USAGE_THRESHOLD_CROSSED,
)

# The webhook row of the operator (an admin of all tenants): it receives every tenant's events.
OPERATOR_WEBHOOK = "*"


class MonitoringEvent(Base):
    """One state change of one connection; kept after the connection itself is deleted."""

    __tablename__ = "monitoring_events"
    __table_args__ = (
        # The listing: one tenant's events, newest first, keyset-paginated on (occurred_at, id).
        Index("ix_monitoring_events_tenant_id_occurred_at", "tenant_id", "occurred_at", "id"),
        # The console's overview: the newest events of every tenant.
        Index("ix_monitoring_events_occurred_at", "occurred_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(64))
    branch_id: Mapped[str] = mapped_column(String(255))
    # No foreign keys: the history outlives a disconnected connection and a deleted client.
    # A client's event (client_misconfigured) has no connection.
    connection_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Structured facts of an event that is not about a connection (a usage threshold's metric,
    # percent, limit ...); NULL for the connection and client events.
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class MonitoringWebhook(Base):
    """A tenant's one webhook endpoint (or the operator's, `tenant_id` OPERATOR_WEBHOOK); its
    signing secret is stored encrypted, bound to the row."""

    __tablename__ = "monitoring_webhooks"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret_enc: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Registered before deliveries followed Standard Webhooks (set by migration 0009): its
    # secret may be any text, so it keys the HMAC as UTF-8, and its deliveries keep the old
    # body and X-Junction-* headers beside the standard ones. A new PUT clears it.
    legacy_signing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MonitoringWebhookDelivery(Base):
    """The outbox: one row per event to deliver, written in the transaction that wrote the event.

    `next_attempt_at` is NULL once delivered or given up, so the due scan only reads pending rows.
    """

    __tablename__ = "monitoring_webhook_deliveries"
    __table_args__ = (
        # The delivery log: one webhook's deliveries, newest first, keyset-paginated.
        Index(
            "ix_monitoring_webhook_deliveries_webhook_tenant_id_created_at",
            "webhook_tenant_id",
            "created_at",
            "id",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(128))
    # Whose webhook receives it: the event's tenant's, or OPERATOR_WEBHOOK ("*"), the operator's.
    webhook_tenant_id: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("monitoring_events.id", ondelete="CASCADE"), index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # Who is delivering it right now; completion is fenced by it (as the connections' leases).
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)

"""Tables of the usage domain: one row per AI call, monthly counters and daily rollups."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Date,
    Index,
    Numeric,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, new_id, utcnow

# USD with ten decimal places: exact for a single token of any listed model.
CostType = Numeric(20, 10)


class UsageEvent(Base):
    __tablename__ = "usage_events"
    __table_args__ = (
        # Idempotency key; NULL request ids never collide, so events without one always insert.
        UniqueConstraint("tenant_id", "request_id"),
        # The admin summary filters one tenant and a time range; see docs/usage.md.
        Index("ix_usage_events_tenant_id_occurred_at", "tenant_id", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    total_tokens: Mapped[int] = mapped_column(BigInteger)
    # Parts of prompt_tokens and completion_tokens billed at their own rates (0 when not reported).
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # NULL: the model has no price, the cost is unknown (not zero).
    estimated_cost_usd: Mapped[Decimal | None] = mapped_column(CostType, nullable=True)
    # The price the cost was computed with (app/usage/prices.py); NULL: unpriced, or costed before
    # prices had versions (`junction usage rerate` fills it in).
    price_version: Mapped[str | None] = mapped_column(String(160), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # "YYYY-MM" of occurred_at (UTC): the counter row this event was added to.
    period: Mapped[str] = mapped_column(String(7))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# A tenant's monthly counter is spread over this many rows; see UsageCounter.
COUNTER_SHARDS = 8


class UsageCounter(Base):
    """Running totals per tenant and month, only ever changed by an adding upsert.

    A tenant's month is split over COUNTER_SHARDS rows and read as their sum: every writer must
    lock the row it adds to until it commits, and with one row per month a busy tenant's writes
    would queue behind each other.
    """

    __tablename__ = "usage_counters"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    estimated_cost_usd: Mapped[Decimal] = mapped_column(CostType, default=Decimal(0))
    unpriced_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageDailyRollup(Base):
    """A tenant's usage per UTC day, model and source, changed only by an adding upsert.

    Written in the same transaction as the events it adds up, so a summary of whole days can
    read these rows instead of the events. Sharded like the counters (the request's shard): with
    one row per key, every writer of a busy tenant's model and source would wait on one lock.
    """

    __tablename__ = "usage_daily_rollups"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    estimated_cost_usd: Mapped[Decimal] = mapped_column(CostType, default=Decimal(0))
    unpriced_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

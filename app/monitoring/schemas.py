"""Response shapes of the monitoring routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.core.schemas import RequestModel, ResponseModel
from app.monitoring.models import EVENT_TYPES


class EventOut(ResponseModel):
    type: str = Field(description=", ".join(EVENT_TYPES))
    provider: str
    # Empty for a client's event (client_misconfigured, or recovered with a client_id).
    branch_id: str
    occurred_at: datetime
    reason: str | None
    # Set on a client's events: Junction's id of the client (`/token-management/clients/{id}`).
    client_id: str | None = None
    details: dict[str, Any] | None = Field(
        default=None,
        description="structured facts of an event that is not a connection's; for "
        "usage_threshold_crossed: metric, percent, threshold, limit, used, period, tier, resets_at",
    )


class EventPage(ResponseModel):
    items: list[EventOut]
    next_cursor: str | None


class TickOut(ResponseModel):
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    due: int
    refreshed: int
    failed: int
    skipped: int


class ProviderStatusCounts(ResponseModel):
    provider: str
    total: int
    statuses: dict[str, int]


class MonitorStatusOut(ResponseModel):
    running: bool
    instance: str | None
    interval_s: float
    in_flight: int
    last_tick: TickOut | None
    providers: list[ProviderStatusCounts]


class WebhookIn(RequestModel):
    url: str = Field(min_length=1, max_length=2048)
    # `whsec_` + base64 of 24-64 bytes (Standard Webhooks). Omitted: a new one is generated
    # and returned once, in this response only.
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="`whsec_` followed by the base64 of 24 to 64 random bytes; omit to generate",
    )
    enabled: bool = True


class WebhookOut(ResponseModel):
    url: str
    enabled: bool
    # Masked ("****" + last 4), except in the PUT response that generated it.
    secret: str | None
    secret_generated: bool = False
    created_at: datetime
    updated_at: datetime


class DeliveredEventOut(ResponseModel):
    id: str
    type: str
    tenant_id: str
    provider: str
    branch_id: str
    occurred_at: datetime


class DeliveryOut(ResponseModel):
    # Also the `webhook-id` header of each attempt (stable across retries and redeliveries).
    id: str
    event: DeliveredEventOut
    status: str = Field(description="pending, delivered or failed (given up)")
    # Since the delivery was queued (or queued again by a redelivery).
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


class DeliveryPage(ResponseModel):
    items: list[DeliveryOut]
    next_cursor: str | None

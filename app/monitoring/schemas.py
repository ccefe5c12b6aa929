"""Response shapes of the monitoring routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from app.core.pagination import NextCursor
from app.core.schemas import RequestModel, ResponseModel
from app.monitoring.models import EVENT_TYPES


class EventOut(ResponseModel):
    type: str = Field(description=", ".join(EVENT_TYPES))
    provider: str = Field(description="the provider's slug")
    # Empty for a client's event (client_misconfigured, or recovered with a client_id).
    branch_id: str = Field(description="the connection's branch; empty for a client's event")
    occurred_at: datetime = Field(description="when it happened")
    reason: str | None = Field(
        description="a safe reason code (e.g. `invalid_grant`, `timeout`), when there is one"
    )
    # Set on a client's events: Junction's id of the client (`/token-management/clients/{id}`).
    client_id: str | None = Field(
        default=None, description=("on a client's events: Junction's id of the client")
    )
    details: dict[str, Any] | None = Field(
        default=None,
        description="structured facts of an event that is not a connection's; for "
        "usage_threshold_crossed: metric, percent, threshold, limit, used, period, tier, resets_at",
    )


class EventPage(ResponseModel):
    items: list[EventOut] = Field(description="this page's events, newest first")
    next_cursor: NextCursor


class TickOut(ResponseModel):
    started_at: datetime = Field(description="when the tick started")
    finished_at: datetime | None = Field(description="when it finished; null while it runs")
    duration_s: float | None = Field(description="how long it took")
    due: int = Field(description="connections due a refresh")
    refreshed: int = Field(description="refreshed successfully")
    failed: int = Field(description="refreshes that failed")
    skipped: int = Field(
        description="due but left for later (another replica holds them, or a backoff)"
    )


class ProviderStatusCounts(ResponseModel):
    provider: str = Field(description="the provider's slug")
    total: int = Field(description="its connections")
    statuses: dict[str, int] = Field(description="how many are in each status")


class MonitorStatusOut(ResponseModel):
    running: bool = Field(description="the loop runs in this process")
    instance: str | None = Field(description="this replica's name")
    interval_s: float = Field(description="the longest time between two ticks (MONITOR_INTERVAL_S)")
    in_flight: int = Field(description="refreshes under way now")
    last_tick: TickOut | None = Field(description="the last completed or running tick")
    providers: list[ProviderStatusCounts] = Field(description="connections per provider and status")


class WebhookIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"url": "https://hooks.example.com/junction", "enabled": True}]
        }
    )

    url: str = Field(
        description="where events are POSTed (https outside development)",
        min_length=1,
        max_length=2048,
    )
    # `whsec_` + base64 of 24-64 bytes (Standard Webhooks). Omitted: a new one is generated
    # and returned once, in this response only.
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="`whsec_` followed by the base64 of 24 to 64 random bytes; omit to generate",
    )
    enabled: bool = Field(
        default=True, description="deliver events (false: keep the webhook, deliver nothing)"
    )


class WebhookOut(ResponseModel):
    url: str = Field(description="where events are POSTed")
    enabled: bool = Field(description="whether events are delivered")
    # Masked ("****" + last 4), except in the PUT response that generated it.
    secret: str | None = Field(
        description=(
            "the signing secret: masked (`****` and its last 4 characters), whole "
            "only in the answer that generated it"
        )
    )
    secret_generated: bool = Field(
        default=False, description="this answer generated the secret (shown once)"
    )
    created_at: datetime = Field(description="when it was registered")
    updated_at: datetime = Field(description="when it was last changed")


class DeliveredEventOut(ResponseModel):
    id: str = Field(description="the event's id")
    type: str = Field(description="the event's type")
    tenant_id: str = Field(description="the tenant it belongs to")
    provider: str = Field(description="the provider's slug")
    branch_id: str = Field(description="the connection's branch; empty for a client's event")
    occurred_at: datetime = Field(description="when it happened")


class DeliveryOut(ResponseModel):
    # Also the `webhook-id` header of each attempt (stable across retries and redeliveries).
    id: str = Field(description="the delivery's id, also the `webhook-id` header of every attempt")
    event: DeliveredEventOut = Field(description="the event delivered")
    status: str = Field(description="pending, delivered or failed (given up)")
    # Since the delivery was queued (or queued again by a redelivery).
    attempts: int = Field(description="attempts since it was queued (or queued again)")
    created_at: datetime = Field(description="when it was queued")
    next_attempt_at: datetime | None = Field(
        description="when it is tried next; null once delivered or given up"
    )
    last_attempt_at: datetime | None = Field(description="when it was last tried")
    last_status_code: int | None = Field(
        description="the HTTP status of the last attempt, if it got one"
    )
    last_error: str | None = Field(
        description="why the last attempt failed (`timeout`, `http_500` …)"
    )
    delivered_at: datetime | None = Field(description="when a 2xx answered it")


class DeliveryPage(ResponseModel):
    items: list[DeliveryOut] = Field(description="this page's deliveries, newest first")
    next_cursor: NextCursor

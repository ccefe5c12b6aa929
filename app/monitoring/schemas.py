"""Response shapes of the monitoring routes."""

from __future__ import annotations

from datetime import datetime

from app.core.schemas import ResponseModel


class EventOut(ResponseModel):
    type: str
    provider: str
    branch_id: str
    occurred_at: datetime
    reason: str | None


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

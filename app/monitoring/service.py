"""Monitoring events (written when a connection changes state, listed per tenant) and the status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import new_id
from app.core.pagination import TimeIdCursor
from app.monitoring import metrics, repository, webhooks
from app.monitoring.loop import Refresher
from app.monitoring.models import (
    EVENT_NEEDS_REAUTH,
    EVENT_RECOVERED,
    EVENT_REFRESH_FAILED,
    MonitoringEvent,
)
from app.monitoring.repository import LeasedConnection
from app.tokens import refresh as token_refresh
from app.tokens.context import StatusChange, TokenContext
from app.tokens.models import STATUS_ACTIVE, STATUS_NEEDS_REAUTH, STATUS_REFRESH_FAILED
from app.tokens.refresh import RefreshResult

MAX_PAGE_SIZE = 200


def event_type_for(previous_status: str, new_status: str) -> str | None:
    """The event a stored-status change raises; None when it is not worth an alert."""
    if previous_status == new_status:
        return None
    if new_status == STATUS_NEEDS_REAUTH:
        return EVENT_NEEDS_REAUTH
    if new_status == STATUS_REFRESH_FAILED:
        return EVENT_REFRESH_FAILED
    if new_status == STATUS_ACTIVE and previous_status in (
        STATUS_REFRESH_FAILED,
        STATUS_NEEDS_REAUTH,
    ):
        return EVENT_RECOVERED
    return None


async def record_status_change(session: AsyncSession, change: StatusChange) -> None:
    """The status listener: runs inside the transaction that stores the new status."""
    event_type = event_type_for(change.previous_status, change.new_status)
    if event_type is None:
        return
    event_id = new_id()
    await session.execute(
        insert(MonitoringEvent).values(
            id=event_id,
            tenant_id=change.tenant_id,
            type=event_type,
            provider=change.provider,
            branch_id=change.branch_id,
            connection_id=change.connection_id,
            occurred_at=change.occurred_at,
            reason=(change.reason or None) and change.reason[:255],
        )
    )
    # The webhook outbox row commits (or rolls back) with the event.
    await webhooks.enqueue_delivery(session, change.tenant_id, event_id)


# --- listing ---------------------------------------------------------------------------------


async def list_events(
    session: AsyncSession,
    tenant_id: str,
    *,
    since: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[MonitoringEvent], str | None]:
    """A tenant's events, newest first, back to `since`; keyset-paginated on (occurred_at, id)."""
    query = select(MonitoringEvent).where(MonitoringEvent.tenant_id == tenant_id)
    if since is not None:
        query = query.where(MonitoringEvent.occurred_at >= since)
    if cursor:
        after = TimeIdCursor.decode(cursor)
        query = query.where(
            tuple_(MonitoringEvent.occurred_at, MonitoringEvent.id) < (after.at, after.id)
        )
    query = query.order_by(MonitoringEvent.occurred_at.desc(), MonitoringEvent.id.desc())
    rows = list((await session.scalars(query.limit(limit + 1))).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = TimeIdCursor(last.occurred_at, last.id).encode()
    return rows, next_cursor


# --- status ----------------------------------------------------------------------------------


async def connection_status_counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Stored statuses per provider (one GROUP BY); also refreshes the Prometheus gauges."""
    counts = await repository.status_counts_by_provider(session)
    metrics.set_status_counts(counts)
    return counts


# --- the loop's refresh ----------------------------------------------------------------------


def monitor_refresher(ctx: TokenContext) -> Refresher:
    """Refresh a leased connection through the tokens domain's single-flight path."""

    async def refresh(connection: LeasedConnection) -> RefreshResult:
        outcome = await token_refresh.refresh_connection(ctx, connection.id, trigger="monitor")
        return outcome.result

    return refresh

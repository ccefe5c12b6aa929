"""Monitoring events (written when a connection changes state, listed per tenant) and the status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import new_id
from app.core.pagination import TimeIdCursor
from app.monitoring import metrics, repository, webhooks
from app.monitoring.loop import Refresher
from app.monitoring.models import (
    EVENT_CLIENT_MISCONFIGURED,
    EVENT_NEEDS_REAUTH,
    EVENT_RECOVERED,
    EVENT_REFRESH_FAILED,
    EVENT_TYPES,
    MonitoringEvent,
)
from app.monitoring.repository import LeasedConnection
from app.tokens import refresh as token_refresh
from app.tokens.context import (
    ConnectionNotice,
    StatusChange,
    StatusRecorder,
    TokenChange,
    TokenContext,
)
from app.tokens.models import (
    CLIENT_ACTIVE,
    CLIENT_MISCONFIGURED,
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTH,
    STATUS_REFRESH_FAILED,
)
from app.tokens.refresh import RefreshOutcome


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


def client_event_type_for(previous_status: str, new_status: str) -> str | None:
    """The event a client's status change raises: misconfigured, or recovered from it."""
    if previous_status == new_status:
        return None
    if new_status == CLIENT_MISCONFIGURED:
        return EVENT_CLIENT_MISCONFIGURED
    if new_status == CLIENT_ACTIVE and previous_status == CLIENT_MISCONFIGURED:
        return EVENT_RECOVERED
    return None


def event_for(change: TokenChange) -> MonitoringEvent | None:
    """The event a change of the tokens domain raises, if any (not yet added to a session)."""
    client_id: str | None = None
    connection_id: str | None = None
    if isinstance(change, StatusChange):
        event_type = event_type_for(change.previous_status, change.new_status)
        branch_id, connection_id = change.branch_id, change.connection_id
    elif isinstance(change, ConnectionNotice):
        event_type = change.kind if change.kind in EVENT_TYPES else None
        branch_id, connection_id = change.branch_id, change.connection_id
    else:  # ClientStatusChange
        event_type = client_event_type_for(change.previous_status, change.new_status)
        # A client's event concerns no one branch.
        branch_id, client_id = "", change.client_id
    if event_type is None:
        return None
    return MonitoringEvent(
        id=new_id(),
        tenant_id=change.tenant_id,
        type=event_type,
        provider=change.provider,
        branch_id=branch_id,
        connection_id=connection_id,
        client_id=client_id,
        occurred_at=change.occurred_at,
        reason=(change.reason or None) and change.reason[:255],
    )


async def prepare_status_recorder(session: AsyncSession, tenant_id: str) -> StatusRecorder:
    """The tokens domain's listener. Looks up whether the tenant's events go to a webhook now,
    before the change is known (a refresh prepares it before calling the provider), and returns
    the recorder that adds the event, and its webhook outbox row, to the session storing the
    change: no I/O between a provider's answer and the commit that keeps the new refresh token."""
    receivers = await webhooks.receivers(session, tenant_id)

    def record(session: AsyncSession, change: TokenChange) -> None:
        event = event_for(change)
        if event is not None:
            add_event(session, event, receivers)

    return record


def add_event(session: AsyncSession, event: MonitoringEvent, receivers: list[str]) -> None:
    """Add an event and its webhook outbox rows to the session that stores the change it reports:
    they commit, or roll back, with it. No I/O (`receivers` was looked up beforehand)."""
    session.add(event)
    for webhook_tenant_id in receivers:
        session.add(webhooks.new_delivery(event.tenant_id, event.id, webhook_tenant_id))


async def record_event(
    session: AsyncSession,
    *,
    tenant_id: str,
    event_type: str,
    provider: str,
    reason: str,
    details: dict[str, Any],
    occurred_at: datetime,
) -> None:
    """Record an event raised by another domain (not a connection's: no branch, no connection)
    with its webhook outbox rows, in the caller's transaction."""
    event = MonitoringEvent(
        id=new_id(),
        tenant_id=tenant_id,
        type=event_type,
        provider=provider,
        branch_id="",
        reason=reason[:255],
        details=details,
        occurred_at=occurred_at,
    )
    add_event(session, event, await webhooks.receivers(session, tenant_id))


async def record_status_change(session: AsyncSession, change: TokenChange) -> None:
    """Prepare and record one change at once (where nothing waits on the commit)."""
    record = await prepare_status_recorder(session, change.tenant_id)
    record(session, change)


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


async def latest_events(session: AsyncSession, *, limit: int) -> list[MonitoringEvent]:
    """The newest events of every tenant (the console's overview): an index range scan."""
    query = select(MonitoringEvent).order_by(
        MonitoringEvent.occurred_at.desc(), MonitoringEvent.id.desc()
    )
    return list((await session.scalars(query.limit(limit))).all())


# --- status ----------------------------------------------------------------------------------


async def connection_status_counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Stored statuses per provider (one GROUP BY); also refreshes the Prometheus gauges."""
    counts = await repository.status_counts_by_provider(session)
    metrics.set_status_counts(counts)
    return counts


# --- the loop's refresh ----------------------------------------------------------------------


def monitor_refresher(ctx: TokenContext) -> Refresher:
    """Refresh a leased connection through the tokens domain's single-flight path, under the
    lease (its write releases it: `lease_released`), and announce the outcome apart."""
    return _TokenRefresher(ctx)


@dataclass(frozen=True)
class _TokenRefresher:
    ctx: TokenContext

    async def load(self, connection_ids: list[str]) -> dict[str, token_refresh.LoadedRow]:
        return await token_refresh.load_leased(self.ctx, connection_ids)

    async def refresh(
        self, connection: LeasedConnection, owner: str, loaded: token_refresh.LoadedRow | None
    ) -> RefreshOutcome:
        return await token_refresh.refresh_connection(
            self.ctx,
            connection.id,
            trigger="monitor",
            lease_owner=owner,
            announce=False,
            preloaded=loaded,
        )

    async def announce(self, outcome: RefreshOutcome) -> None:
        await token_refresh.announce_outcome(self.ctx, outcome)

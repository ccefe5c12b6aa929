"""HTTP routes of the monitoring domain: the events feed and the loop's status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.core.auth import ALL_TENANTS
from app.core.deps import AdminPrincipal, CurrentPrincipal, SessionDep, TenantIdQuery
from app.core.errors import InvalidInput
from app.monitoring import service
from app.monitoring.loop import MonitorLoop
from app.monitoring.schemas import (
    EventOut,
    EventPage,
    MonitorStatusOut,
    ProviderStatusCounts,
    TickOut,
)
from app.tokens.models import STORED_STATUSES

router = APIRouter(tags=["monitoring"])


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput("since: out of range once moved to UTC", field="since") from None


@router.get("/monitoring/events", response_model=EventPage)
async def list_events(
    session: SessionDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
    since: Annotated[
        datetime | None, Query(description="only events at or after this time (ISO 8601; UTC)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> EventPage:
    """A tenant's alerts, newest first: refresh_failed, needs_reauth, recovered."""
    tenant = principal.resolve_tenant(tenant_id)
    if since is not None:
        since = _as_utc(since)
    events, next_cursor = await service.list_events(
        session, tenant, since=since, limit=limit, cursor=cursor
    )
    return EventPage(
        items=[EventOut.model_validate(event) for event in events], next_cursor=next_cursor
    )


@router.get("/monitoring/status", response_model=MonitorStatusOut)
async def monitor_status(
    request: Request, session: SessionDep, principal: AdminPrincipal
) -> MonitorStatusOut:
    """This instance's loop and the connections' stored statuses per provider.

    The counts cover every tenant, so this needs an admin token for all tenants (`"*"`).
    """
    principal.require_tenant(ALL_TENANTS)
    monitor: MonitorLoop | None = getattr(request.app.state, "monitor", None)
    counts = await service.connection_status_counts(session)
    tick = monitor.last_tick if monitor is not None else None
    return MonitorStatusOut(
        running=monitor is not None and monitor.running,
        instance=monitor.owner if monitor is not None else None,
        interval_s=request.app.state.settings.monitor_interval_s,
        in_flight=monitor.in_flight if monitor is not None else 0,
        last_tick=TickOut.model_validate(tick) if tick is not None else None,
        providers=[
            ProviderStatusCounts(
                provider=provider,
                total=sum(statuses.values()),
                statuses={status: statuses.get(status, 0) for status in STORED_STATUSES},
            )
            for provider, statuses in sorted(counts.items())
        ],
    )

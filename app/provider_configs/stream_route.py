"""GET /config/{tenant_id}/stream: the tenant's committed configuration changes as Server-Sent
Events (the events themselves come from app/provider_configs/stream.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from app.core import openapi
from app.core.deps import TenantIdPath
from app.provider_configs.router import ERRORS, Caller, DomainDep
from app.provider_configs.stream import EVENT
from app.state import app_state

router = APIRouter(tags=["configs"])


class ChangeStreamResponse(EventSourceResponse):
    """Server-Sent Events, with the media type on the class so OpenAPI documents it."""

    media_type = "text/event-stream"


_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"A Server-Sent Events stream: one `{EVENT}` event per committed change "
        "(data: the version's history entry with its diff, as in `HistoryItem`; id: its "
        "position), and heartbeat comments.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **ERRORS,
    **openapi.errors(429),
}
# A position is a version row's id.
_POSITION_PATTERN = r"^[0-9]{1,18}$"


@router.get(
    "/config/{tenant_id}/stream",
    summary="Stream configuration changes",
    response_class=ChangeStreamResponse,
    responses=_STREAM_DOC,
)
async def stream_config_changes(
    request: Request,
    tenant_id: TenantIdPath,
    principal: Caller,
    domain: DomainDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=_POSITION_PATTERN,
            description="resume after this position (the id of the last event received)",
        ),
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=10**18 - 1,
            description="resume after this position, for clients that cannot send "
            "Last-Event-ID (the header wins); without either, the stream starts at the next "
            "change",
        ),
    ] = None,
    follow: Annotated[
        bool,
        Query(
            description="keep the stream open for changes to come (false: send the changes "
            "already committed after the position, then end)"
        ),
    ] = True,
) -> ChangeStreamResponse:
    """Each committed change of the tenant's configurations, as Server-Sent Events.

    One `change` event per new version (its history entry: the version, its masked snapshot and
    its diff), whichever replica the change was written through; the event id is a position to
    resume from (`Last-Event-ID`), so a reconnect loses nothing. Heartbeat comments keep the
    connection open. The stream ends when the caller's token expires or is revoked; reconnect
    with a new token and the last event id. A tenant may hold a bounded number of streams per
    replica (429 beyond).
    """
    principal.require_tenant(tenant_id)
    changes = domain.changes
    if last_event_id is not None:
        position = int(last_event_id)
    elif after is not None:
        position = after
    else:
        position = await changes.latest_position(tenant_id)
    revocations = app_state(request.app).revocations
    jti = principal.jti
    slot = changes.slots.take(tenant_id)
    events = changes.events(
        tenant_id,
        position,
        slot=slot,
        still_allowed=lambda: not revocations.is_revoked(jti),
        ends_at_s=principal.expires_at_s,
        follow=follow,
    )
    return ChangeStreamResponse(
        events,
        ping=changes.heartbeat_s,
        headers={"Cache-Control": "no-store"},
        # Given back by the stream when it ends; this covers one that never started.
        background=BackgroundTask(slot.release),
    )

"""HTTP routes of the usage domain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError

from app.core import openapi
from app.core.db import unit_of_work, utcnow
from app.core.deps import (
    CurrentPrincipal,
    SessionDep,
    SettingsDep,
    TenantIdPath,
    get_principal,
)
from app.core.routing import DirectRoute
from app.state import app_state
from app.usage import alerts, service, summaries
from app.usage.schemas import (
    EVENT_EXAMPLE,
    MAX_BATCH,
    AlertThresholdsIn,
    AlertThresholdsRead,
    GroupBy,
    QuotaRead,
    UsageBatchRead,
    UsageEventIn,
    UsageEventRead,
    UsageSummary,
)

router = APIRouter(tags=["usage"])

_ONE_EVENT = TypeAdapter(UsageEventIn)
_EVENT_LIST = TypeAdapter(Annotated[list[UsageEventIn], Field(min_length=1, max_length=MAX_BATCH)])
_EVENT_SCHEMA = openapi.schema_ref(UsageEventIn)
_BODY_EXAMPLES = {
    "one": {"summary": "one AI call", "value": EVENT_EXAMPLE},
    "batch": {
        "summary": "a batch of calls",
        "value": [
            EVENT_EXAMPLE,
            {**EVENT_EXAMPLE, "request_id": "chatcmpl-0a1b2c3d", "prompt_tokens": 80},
        ],
    },
}
_BODY_SCHEMA = {
    "oneOf": [
        _EVENT_SCHEMA,
        {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1, "maxItems": MAX_BATCH},
    ]
}


class EventsBody:
    """The body of POST /usage/openai: one event object, or a list of up to 1,000."""

    def __init__(self, events: list[UsageEventIn], *, is_batch: bool) -> None:
        self.events = events
        self.is_batch = is_batch


async def events_body(request: Request) -> EventsBody:
    # Parsed here rather than by a union-typed parameter, so errors name the field plainly
    # ("prompt_tokens", "[3].prompt_tokens") instead of the union member that was tried.
    raw = await request.body()
    is_batch = raw.lstrip()[:1] == b"["
    try:
        events = _EVENT_LIST.validate_json(raw) if is_batch else [_ONE_EVENT.validate_json(raw)]
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None
    return EventsBody(events, is_batch=is_batch)


_ONE_RECORDED = TypeAdapter(UsageEventRead)
_BATCH_RECORDED = TypeAdapter(UsageBatchRead)


async def record_openai_usage(request: Request) -> Response:
    """Record one AI call, or a list of up to 1,000 (all or nothing).

    201 when at least one event was new; 200 when all were repeats (the first events are
    returned unchanged and the counters do not move). A list answers `{items, created,
    duplicates}` in the order sent. A single event may share its transaction with other
    requests to the same replica (group commit); it is answered after that commit.
    \f
    The hot write of the service, on a `DirectRoute` (see `add_hot_routes`): it reads its own
    caller and body, so an event costs no dependency solving and no response-model pass.
    """
    # The caller before the body: an anonymous caller gets 401, not a 422.
    principal = await get_principal(request)
    body = await events_body(request)
    for tenant_id in {event.tenant_id for event in body.events}:
        principal.require_tenant(tenant_id)
    state = app_state(request.app)
    batcher = state.usage_batcher
    if batcher is not None and not body.is_batch:
        # One event: checked and priced here (its errors are its own), then written in this
        # replica's next group commit; answered once that has committed.
        row = service.event_row(state.usage_prices, body.events[0], now=utcnow())
        recorded = [await batcher.record(row)]
    else:
        async with unit_of_work(state.sessionmaker) as session:
            recorded = await service.record_events(
                session,
                state.settings,
                state.usage_prices,
                body.events,
                now=utcnow(),
                indexed=body.is_batch,
            )
    created = sum(not event.duplicate for event in recorded)
    status = 201 if created else 200
    if not body.is_batch:
        content = _ONE_RECORDED.dump_json(recorded[0])
    else:
        batch = UsageBatchRead(items=recorded, created=created, duplicates=len(recorded) - created)
        content = _BATCH_RECORDED.dump_json(batch)
    return Response(content, status_code=status, media_type="application/json")


def add_hot_routes(app: FastAPI) -> None:
    """POST /usage/openai, on the app itself: ahead of every included router."""
    app.router.add_api_route(
        "/usage/openai",
        record_openai_usage,
        summary="Record AI usage",
        methods=["POST"],
        tags=["usage"],
        response_model=UsageEventRead | UsageBatchRead,
        status_code=201,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _BODY_SCHEMA, "examples": _BODY_EXAMPLES}
                },
            }
        },
        responses={200: {"description": "every event was a repeat of a known request_id"}},
        route_class_override=DirectRoute,
    )


@router.get(
    "/usage/{tenant_id}/quota",
    summary="Read usage against the tier's limits",
    response_model=QuotaRead,
)
async def read_quota(
    tenant_id: TenantIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> QuotaRead:
    """The tenant's limits, usage and what remains for the current month (UTC)."""
    principal.require_tenant(tenant_id)
    quota = await service.current_quota(session, settings, tenant_id, now=utcnow())
    return QuotaRead(tenant_id=tenant_id, **quota.model_dump())


@router.get(
    "/api/admin/workspaces/{tenant_id}/usage",
    summary="Summarise a workspace's AI usage",
    response_model=UsageSummary,
    tags=["workspaces"],
)
async def read_usage_summary(
    tenant_id: TenantIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    from_: Annotated[
        str | None,
        Query(alias="from", description="ISO 8601 date or date-time (UTC); default: to - 30 days"),
    ] = None,
    to: Annotated[
        str | None,
        Query(description="ISO 8601, exclusive; a date alone includes that day; default: now"),
    ] = None,
    group_by: Annotated[GroupBy, Query(description="the breakdown: model, day or source")] = (
        GroupBy.model
    ),
) -> UsageSummary:
    """Totals and a breakdown of the tenant's AI usage over [from, to) (at most a year), with
    the current month's counters against the tier's limits."""
    principal.require_tenant(tenant_id)
    now = utcnow()
    window = summaries.parse_range(from_, to, now=now)
    return await summaries.summarize(session, settings, tenant_id, window, group_by, now=now)


@router.get(
    "/api/admin/workspaces/{tenant_id}/usage/alerts",
    summary="Read usage alert thresholds",
    response_model=AlertThresholdsRead,
    tags=["workspaces"],
)
async def read_usage_alerts(
    tenant_id: TenantIdPath, principal: CurrentPrincipal, session: SessionDep
) -> AlertThresholdsRead:
    """The workspace's budget alert thresholds: each is a percent of every monthly limit of its
    tier (tokens, calls), and crossing one records a `usage_threshold_crossed` monitoring event,
    delivered by the webhooks, once per threshold per period."""
    principal.require_tenant(tenant_id)
    found = await alerts.get_alert_settings(session, tenant_id)
    return AlertThresholdsRead(
        tenant_id=tenant_id, percents=found.percents, is_default=found.is_default
    )


@router.put(
    "/api/admin/workspaces/{tenant_id}/usage/alerts",
    summary="Set usage alert thresholds",
    response_model=AlertThresholdsRead,
    tags=["workspaces"],
)
async def put_usage_alerts(
    tenant_id: TenantIdPath,
    body: AlertThresholdsIn,
    principal: CurrentPrincipal,
    session: SessionDep,
) -> AlertThresholdsRead:
    """Replace the workspace's alert thresholds (`[]`: no alerts). Crossings already recorded in
    this period stay; a threshold added below the usage so far fires from the next period."""
    principal.require_tenant(tenant_id)
    saved = await alerts.put_alert_settings(session, tenant_id, body.percents, now=utcnow())
    return AlertThresholdsRead(
        tenant_id=tenant_id, percents=saved.percents, is_default=saved.is_default
    )

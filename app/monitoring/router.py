"""HTTP routes of the monitoring domain: the events feed, the webhook and the loop's status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import openapi
from app.core.config import Settings
from app.core.crypto import Keyring, mask
from app.core.deps import (
    CurrentPrincipal,
    KeyringDep,
    SessionDep,
    SettingsDep,
    TenantIdQuery,
)
from app.core.errors import InvalidField
from app.core.pagination import PageCursor, PageLimit
from app.monitoring import service, webhooks
from app.monitoring.models import OPERATOR_WEBHOOK, MonitoringWebhook
from app.monitoring.schemas import (
    DeliveredEventOut,
    DeliveryOut,
    DeliveryPage,
    EventOut,
    EventPage,
    MonitorStatusOut,
    ProviderStatusCounts,
    TickOut,
    WebhookIn,
    WebhookOut,
)
from app.state import app_state
from app.tokens.models import STORED_STATUSES
from app.workspaces.service import ensure_workspace

router = APIRouter(tags=["monitoring"])


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidField("query.since", "out of range once moved to UTC") from None


@router.get("/monitoring/events", summary="List connection events", response_model=EventPage)
async def list_events(
    session: SessionDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
    since: Annotated[
        datetime | None, Query(description="only events at or after this time (ISO 8601; UTC)")
    ] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> EventPage:
    """A tenant's events, newest first: refresh_failed, needs_reauth, recovered, connected,
    disconnected, client_misconfigured, refresh_token_expiring (docs/monitoring.md)."""
    tenant = principal.resolve_tenant(tenant_id)
    if since is not None:
        since = _as_utc(since)
    events, next_cursor = await service.list_events(
        session, tenant, since=since, limit=limit, cursor=cursor
    )
    return EventPage(
        items=[EventOut.model_validate(event) for event in events], next_cursor=next_cursor
    )


@router.get("/monitoring/status", summary="Monitoring loop status", response_model=MonitorStatusOut)
async def monitor_status(
    request: Request, session: SessionDep, principal: CurrentPrincipal
) -> MonitorStatusOut:
    """This instance's loop and the connections' stored statuses per provider.

    The counts cover every tenant, so this needs an admin token for all tenants (`"*"`).
    """
    state = app_state(request.app)
    monitor = state.monitoring.loop
    counts = await service.connection_status_counts(session)
    tick = monitor.last_tick if monitor is not None else None
    return MonitorStatusOut(
        running=monitor is not None and monitor.running,
        instance=monitor.owner if monitor is not None else None,
        interval_s=state.settings.monitor_interval_s,
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


# --- webhooks: the tenant's, and the operator's --------------------------------------------

DeliveryStatusQuery = Annotated[
    webhooks.DeliveryStatus | None,
    Query(description="pending (scheduled or under way), delivered, failed (given up)"),
]
EventTypeQuery = Annotated[
    str | None, Query(max_length=32, description="one event type (see /monitoring/events)")
]
DeliveryIdPath = Annotated[
    str,
    Path(min_length=1, max_length=64, description="the delivery's id (its `webhook-id` header)"),
]


def _webhook_out(webhook: MonitoringWebhook, secret: str, *, generated: bool) -> WebhookOut:
    return WebhookOut(
        url=webhook.url,
        enabled=webhook.enabled,
        secret=secret if generated else mask(secret),
        secret_generated=generated,
        created_at=webhook.created_at,
        updated_at=webhook.updated_at,
    )


def _delivery_out(logged: webhooks.LoggedDelivery) -> DeliveryOut:
    delivery = logged.delivery
    return DeliveryOut(
        id=delivery.id,
        event=DeliveredEventOut.model_validate(logged.event),
        status=logged.status,
        attempts=delivery.attempts,
        created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at,
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
    )


async def _put(
    session: AsyncSession, settings: Settings, keyring: Keyring, owner: str, body: WebhookIn
) -> WebhookOut:
    secret = body.secret or webhooks.generate_secret()
    webhook = await webhooks.put_webhook(
        session, keyring, settings, owner, url=body.url, secret=secret, enabled=body.enabled
    )
    return _webhook_out(webhook, secret, generated=body.secret is None)


async def _get(session: AsyncSession, keyring: Keyring, owner: str) -> WebhookOut:
    webhook = await webhooks.get_webhook(session, owner)
    # An unreadable secret is still shown masked ("****"); deliveries record secret_unreadable.
    secret = webhooks.read_secret(keyring, webhook) or ""
    return _webhook_out(webhook, secret, generated=False)


async def _log(
    session: AsyncSession,
    owner: str,
    status: str | None,
    event_type: str | None,
    limit: int,
    cursor: str | None,
) -> DeliveryPage:
    rows, next_cursor = await webhooks.list_deliveries(
        session, owner, status=status, event_type=event_type, limit=limit, cursor=cursor
    )
    return DeliveryPage(items=[_delivery_out(row) for row in rows], next_cursor=next_cursor)


@router.put(
    "/monitoring/webhook", summary="Register the tenant's webhook", response_model=WebhookOut
)
async def put_webhook(
    body: WebhookIn,
    session: SessionDep,
    settings: SettingsDep,
    keyring: KeyringDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
) -> WebhookOut:
    """Register (or replace) the tenant's webhook. Without `secret` one is generated and shown
    in this response only; every event is signed with it, as Standard Webhooks specifies (see
    docs/monitoring.md)."""
    tenant = principal.resolve_tenant(tenant_id)
    await ensure_workspace(session, tenant)
    return await _put(session, settings, keyring, tenant, body)


@router.get(
    "/monitoring/webhook",
    summary="Read the tenant's webhook",
    response_model=WebhookOut,
    responses=openapi.errors(404),
)
async def get_webhook(
    session: SessionDep,
    keyring: KeyringDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
) -> WebhookOut:
    """The tenant's webhook: URL, whether it is enabled, and the secret masked."""
    return await _get(session, keyring, principal.resolve_tenant(tenant_id))


@router.delete(
    "/monitoring/webhook",
    summary="Remove the tenant's webhook",
    status_code=204,
    responses=openapi.errors(404),
)
async def delete_webhook(
    session: SessionDep, principal: CurrentPrincipal, tenant_id: TenantIdQuery = None
) -> Response:
    """Remove the webhook; events not yet delivered are no longer sent."""
    await webhooks.delete_webhook(session, principal.resolve_tenant(tenant_id))
    return Response(status_code=204)


@router.get(
    "/monitoring/webhook/deliveries", summary="List webhook deliveries", response_model=DeliveryPage
)
async def list_deliveries(
    session: SessionDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
    status: DeliveryStatusQuery = None,
    event_type: EventTypeQuery = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> DeliveryPage:
    """The tenant webhook's delivery log, newest first: attempts, status, last error."""
    tenant = principal.resolve_tenant(tenant_id)
    return await _log(session, tenant, status, event_type, limit, cursor)


@router.post(
    "/monitoring/webhook/deliveries/{delivery_id}/redeliver",
    summary="Redeliver a webhook delivery",
    response_model=DeliveryOut,
    responses=openapi.errors(404, 409),
)
async def redeliver(
    delivery_id: DeliveryIdPath,
    session: SessionDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
) -> DeliveryOut:
    """Queue a delivery again now (delivered or given up ones too), with a new retry schedule."""
    tenant = principal.resolve_tenant(tenant_id)
    return _delivery_out(await webhooks.redeliver(session, tenant, delivery_id))


@router.put(
    "/monitoring/operator-webhook",
    summary="Register the operator webhook",
    response_model=WebhookOut,
)
async def put_operator_webhook(
    body: WebhookIn,
    session: SessionDep,
    settings: SettingsDep,
    keyring: KeyringDep,
    principal: CurrentPrincipal,
) -> WebhookOut:
    """Register (or replace) the operator's webhook, which receives every tenant's events
    (besides each tenant's own webhook). Secret and signing as for a tenant's webhook."""
    return await _put(session, settings, keyring, OPERATOR_WEBHOOK, body)


@router.get(
    "/monitoring/operator-webhook",
    summary="Read the operator webhook",
    response_model=WebhookOut,
    responses=openapi.errors(404),
)
async def get_operator_webhook(
    session: SessionDep, keyring: KeyringDep, principal: CurrentPrincipal
) -> WebhookOut:
    """The operator's webhook: URL, whether it is enabled, and the secret masked."""
    return await _get(session, keyring, OPERATOR_WEBHOOK)


@router.delete(
    "/monitoring/operator-webhook",
    summary="Remove the operator webhook",
    status_code=204,
    responses=openapi.errors(404),
)
async def delete_operator_webhook(session: SessionDep, principal: CurrentPrincipal) -> Response:
    """Remove the operator's webhook; its events not yet delivered are no longer sent."""
    await webhooks.delete_webhook(session, OPERATOR_WEBHOOK)
    return Response(status_code=204)


@router.get(
    "/monitoring/operator-webhook/deliveries",
    summary="List operator webhook deliveries",
    response_model=DeliveryPage,
)
async def list_operator_deliveries(
    session: SessionDep,
    principal: CurrentPrincipal,
    status: DeliveryStatusQuery = None,
    event_type: EventTypeQuery = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> DeliveryPage:
    """The operator webhook's delivery log (every tenant's events), newest first."""
    return await _log(session, OPERATOR_WEBHOOK, status, event_type, limit, cursor)


@router.post(
    "/monitoring/operator-webhook/deliveries/{delivery_id}/redeliver",
    summary="Redeliver to the operator webhook",
    response_model=DeliveryOut,
    responses=openapi.errors(404, 409),
)
async def redeliver_to_operator(
    delivery_id: DeliveryIdPath, session: SessionDep, principal: CurrentPrincipal
) -> DeliveryOut:
    """Queue one of the operator webhook's deliveries again now, with a new retry schedule."""
    return _delivery_out(await webhooks.redeliver(session, OPERATOR_WEBHOOK, delivery_id))

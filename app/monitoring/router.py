"""HTTP routes of the monitoring domain: the events feed, the webhook and the loop's status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.core.crypto import DecryptionError, mask
from app.core.deps import (
    CurrentPrincipal,
    KeyringDep,
    SessionDep,
    SettingsDep,
    TenantIdQuery,
)
from app.core.errors import InvalidField, NotFound
from app.monitoring import service, webhooks
from app.monitoring.models import MonitoringWebhook
from app.monitoring.schemas import (
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


@router.get("/monitoring/status", response_model=MonitorStatusOut)
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


# --- webhook ---------------------------------------------------------------------------------


def _webhook_out(webhook: MonitoringWebhook, secret: str, *, generated: bool) -> WebhookOut:
    return WebhookOut(
        url=webhook.url,
        enabled=webhook.enabled,
        secret=secret if generated else mask(secret),
        secret_generated=generated,
        created_at=webhook.created_at,
        updated_at=webhook.updated_at,
    )


@router.put("/monitoring/webhook", response_model=WebhookOut)
async def put_webhook(
    body: WebhookIn,
    session: SessionDep,
    settings: SettingsDep,
    keyring: KeyringDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
) -> WebhookOut:
    """Register (or replace) the tenant's webhook. Without `secret` one is generated and shown
    in this response only; every event is signed with it (see docs/monitoring.md)."""
    tenant = principal.resolve_tenant(tenant_id)
    url = await webhooks.check_url(body.url, settings)
    secret = body.secret or webhooks.generate_secret()
    await ensure_workspace(session, tenant)
    webhook = await webhooks.put_webhook(
        session, keyring, tenant, url=url, secret=secret, enabled=body.enabled
    )
    return _webhook_out(webhook, secret, generated=body.secret is None)


@router.get("/monitoring/webhook", response_model=WebhookOut)
async def get_webhook(
    session: SessionDep,
    keyring: KeyringDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
) -> WebhookOut:
    """The tenant's webhook: URL, whether it is enabled, and the secret masked."""
    tenant = principal.resolve_tenant(tenant_id)
    webhook = await webhooks.get_webhook(session, tenant)
    if webhook is None:
        raise NotFound("no webhook is registered for this tenant")
    try:
        secret = keyring.decrypt(webhook.secret_enc, webhooks.secret_aad(tenant))
    except DecryptionError:
        secret = ""  # still shown masked ("****"); deliveries record secret_unreadable
    return _webhook_out(webhook, secret, generated=False)


@router.delete("/monitoring/webhook", status_code=204)
async def delete_webhook(
    session: SessionDep, principal: CurrentPrincipal, tenant_id: TenantIdQuery = None
) -> Response:
    """Remove the webhook; events not yet delivered are no longer sent."""
    tenant = principal.resolve_tenant(tenant_id)
    if not await webhooks.delete_webhook(session, tenant):
        raise NotFound("no webhook is registered for this tenant")
    return Response(status_code=204)

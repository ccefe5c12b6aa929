"""The console's pages and actions (HTTP only): each calls the services the API calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from app.admin import sessions
from app.admin.rendering import is_htmx, render
from app.admin.security import (
    SIGN_IN_PATH,
    ConsoleDep,
    ConsoleRoute,
    SignInFormChecked,
    cookie_options,
    set_session_cookie,
)
from app.admin.usage_chart import RANGES_DAYS, usage_chart
from app.core.db import utcnow
from app.core.deps import SessionDep, SettingsDep, TenantIdPath
from app.monitoring import service as monitoring_service
from app.state import app_state
from app.tokens import clients, connections, reads, timing
from app.tokens.models import STORED_STATUSES
from app.tokens.schemas import BRANCH_ID_PATTERN, PROVIDER_PATTERN
from app.usage import service as usage_service
from app.workspaces import service as workspace_service

router = APIRouter(prefix="/admin", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
EVENTS_SHOWN = 25
# A filter form's "any" sends an empty value.
Provider = Annotated[str, Query(pattern=f"({PROVIDER_PATTERN})|^$")]
Cursor = Annotated[str | None, Query(max_length=1024)]


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- signing in and out ----------------------------------------------------------------------


def _sign_in_form(request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
    settings = app_state(request.app).settings
    form_token = sessions.new_secret()
    response = render(request, template, {"form_token": form_token, **context})
    response.set_cookie(
        sessions.SIGN_IN_COOKIE, form_token, max_age=600, **cookie_options(not settings.is_dev)
    )
    return response


@router.get("/sign-in")
async def sign_in_page(request: Request) -> HTMLResponse:
    return _sign_in_form(request, "sign_in.html", {})


@router.post("/sign-in", dependencies=[SignInFormChecked])
async def sign_in_with_token(
    request: Request,
    session: SessionDep,
    bearer_token: Annotated[str, Form(min_length=1, max_length=8192)],
) -> Response:
    opened = await sessions.sign_in_with_bearer(session, app_state(request.app), bearer_token)
    response = see_other("/admin")
    set_session_cookie(response, opened, secure=not app_state(request.app).settings.is_dev)
    return response


@router.get("/link")
async def link_page(
    request: Request, token: Annotated[str, Query(min_length=1, max_length=256)]
) -> HTMLResponse:
    """A page with one button: following the printed link spends nothing by itself (a link
    previewer fetching it does not sign anyone in)."""
    return _sign_in_form(request, "link.html", {"link_token": token})


@router.post("/link", dependencies=[SignInFormChecked])
async def redeem_link(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str, Form(min_length=1, max_length=256)],
) -> Response:
    opened = await sessions.redeem_link(session, settings, token)
    response = see_other("/admin")
    set_session_cookie(response, opened, secure=not settings.is_dev)
    return response


@router.post("/sign-out")
async def sign_out(
    request: Request, console: ConsoleDep, session: SessionDep, settings: SettingsDep
) -> Response:
    await sessions.close_session(session, request.cookies.get(sessions.SESSION_COOKIE, ""))
    response = see_other(SIGN_IN_PATH)
    response.delete_cookie(sessions.SESSION_COOKIE, **cookie_options(not settings.is_dev))
    return response


# --- overview ----------------------------------------------------------------------------------


@router.get("")
async def overview(request: Request, console: ConsoleDep, session: SessionDep) -> HTMLResponse:
    state = app_state(request.app)
    counts = await monitoring_service.connection_status_counts(session)
    monitor = state.monitoring.loop
    return render(
        request,
        "overview.html",
        {
            "statuses": STORED_STATUSES,
            "providers": sorted(counts.items()),
            "monitor": monitor,
            "tick": monitor.last_tick if monitor is not None else None,
            "interval_s": state.settings.monitor_interval_s,
            "events": await monitoring_service.latest_events(session, limit=EVENTS_SHOWN),
        },
    )


# --- workspaces --------------------------------------------------------------------------------


@router.get("/workspaces")
async def workspaces(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    settings: SettingsDep,
    q: Annotated[str, Query(max_length=128)] = "",
    cursor: Cursor = None,
) -> HTMLResponse:
    rows, next_cursor = await workspace_service.list_workspaces(
        session, tier=None, limit=PAGE_SIZE, cursor=cursor, search=q.strip() or None
    )
    quotas = await usage_service.current_quotas(
        session, settings, {row.id: row.tier for row in rows}, now=utcnow()
    )
    context = {"workspaces": rows, "quotas": quotas, "q": q, "next_cursor": next_cursor}
    template = "_workspace_rows.html" if is_htmx(request) else "workspaces.html"
    return render(request, template, context)


async def _connections_context(
    request: Request,
    session: SessionDep,
    tenant_id: str,
    provider: str,
    status: str | None,
    cursor: str | None,
) -> dict[str, Any]:
    ctx = app_state(request.app).tokens
    listing = await connections.list_connections(
        session,
        ctx.registry,
        connections.ConnectionFilter(tenant_id, provider or None, None, status or None),
        now=utcnow(),
        limit=PAGE_SIZE,
        cursor=cursor,
    )
    return {
        "tenant_id": tenant_id,
        "listing": listing,
        "provider": provider or "",
        "status": status or "",
        "statuses": timing.CONNECTION_STATUSES,
        # The providers the tenant has a client for: those its connections can be with.
        "providers": sorted({c.provider for c in await clients.list_clients(session, tenant_id)}),
    }


StatusFilter = Annotated[str, Query(max_length=32)]


def _status_or_none(status: str) -> str | None:
    return status if status in timing.CONNECTION_STATUSES else None


@router.get("/workspaces/{tenant_id}")
async def workspace(
    request: Request,
    tenant_id: TenantIdPath,
    console: ConsoleDep,
    session: SessionDep,
    settings: SettingsDep,
    provider: Provider = "",
    status: StatusFilter = "",
    days: int = 30,
    cursor: Cursor = None,
) -> HTMLResponse:
    found = await workspace_service.get_workspace(session, tenant_id)
    events, _ = await monitoring_service.list_events(
        session, tenant_id, since=None, limit=EVENTS_SHOWN, cursor=None
    )
    days = days if days in RANGES_DAYS else 30
    context: dict[str, Any] = {
        "workspace": found,
        "tiers": sorted(workspace_service.tier_limits(settings)),
        "events": events,
        "days": days,
        **await _connections_context(
            request, session, tenant_id, provider, _status_or_none(status), cursor
        ),
    }
    return render(request, "workspace.html", context)


@router.get("/workspaces/{tenant_id}/connections")
async def workspace_connections(
    request: Request,
    tenant_id: TenantIdPath,
    console: ConsoleDep,
    session: SessionDep,
    provider: Provider = "",
    status: StatusFilter = "",
    cursor: Cursor = None,
) -> HTMLResponse:
    context = await _connections_context(
        request, session, tenant_id, provider, _status_or_none(status), cursor
    )
    return render(request, "_connections.html", context)


@router.get("/workspaces/{tenant_id}/usage")
async def workspace_usage(
    request: Request,
    tenant_id: TenantIdPath,
    console: ConsoleDep,
    session: SessionDep,
    settings: SettingsDep,
    days: int = 30,
) -> HTMLResponse:
    days = days if days in RANGES_DAYS else 30
    chart = await usage_chart(session, settings, tenant_id, days=days, now=utcnow())
    return render(
        request, "_usage.html", {"tenant_id": tenant_id, "usage": chart, "ranges": RANGES_DAYS}
    )


BranchField = Annotated[str, Form(pattern=BRANCH_ID_PATTERN)]
ProviderField = Annotated[str, Form(pattern=PROVIDER_PATTERN)]


def _changed(response: HTMLResponse) -> HTMLResponse:
    # htmx reloads the connections list (its filters kept) when a connection changed.
    response.headers["HX-Trigger"] = "connections-changed"
    return response


def _back_to_workspace(tenant_id: str, notice: str) -> RedirectResponse:
    return see_other(f"/admin/workspaces/{tenant_id}?notice={notice}")


@router.post("/workspaces/{tenant_id}/connections/refresh")
async def force_refresh(
    request: Request,
    tenant_id: TenantIdPath,
    console: ConsoleDep,
    provider: ProviderField,
    branch_id: BranchField,
) -> Response:
    view = await reads.force_refresh(app_state(request.app).tokens, tenant_id, provider, branch_id)
    if is_htmx(request):
        message = f"Refreshed {provider} / {branch_id}: expires {view.expires_at or 'never'}."
        return _changed(render(request, "_notice.html", {"message": message}))
    return _back_to_workspace(tenant_id, "refreshed")


@router.post("/workspaces/{tenant_id}/connections/disconnect")
async def disconnect(
    request: Request,
    tenant_id: TenantIdPath,
    console: ConsoleDep,
    provider: ProviderField,
    branch_id: BranchField,
) -> Response:
    revoked = await connections.disconnect(
        app_state(request.app).tokens, tenant_id, provider, branch_id
    )
    if is_htmx(request):
        where = "revoked at the provider" if revoked else "deleted"
        message = f"Disconnected {provider} / {branch_id} ({where})."
        return _changed(render(request, "_notice.html", {"message": message}))
    return _back_to_workspace(tenant_id, "disconnected")


@router.post("/workspaces/{tenant_id}/tier")
async def change_tier(
    tenant_id: TenantIdPath,
    console: ConsoleDep,
    session: SessionDep,
    settings: SettingsDep,
    tier: Annotated[str, Form(min_length=1, max_length=32)],
) -> Response:
    await workspace_service.update_workspace(session, settings, tenant_id, name=None, tier=tier)
    return _back_to_workspace(tenant_id, "tier")

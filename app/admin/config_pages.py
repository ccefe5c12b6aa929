"""The console's provider-configuration pages: each type's current document (secrets masked),
a configuration's history a page at a time, two versions side by side, and rollback with its
preview. Each calls the provider_configs domain's services, as the API does."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from app.admin.rendering import render
from app.admin.router import PAGE_SIZE, Cursor, see_other
from app.admin.security import ConsoleDep, ConsoleRoute
from app.core.deps import TENANT_ID_PATTERN, SessionDep, TenantIdPath
from app.core.errors import invalid_fields
from app.provider_configs import history as configs_history
from app.provider_configs import reads as configs_reads
from app.provider_configs import service as configs_service
from app.provider_configs.schemas import PROVIDER_TYPES, RollbackRequest, list_field
from app.state import app_state

router = APIRouter(prefix="/admin", route_class=ConsoleRoute, include_in_schema=False)


TenantQuery = Annotated[str, Query(pattern=f"({TENANT_ID_PATTERN})|^$")]
ConfigIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get("/configs")
async def configs(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    tenant_id: TenantQuery = "",
) -> HTMLResponse:
    document = None
    if tenant_id:
        domain = app_state(request.app).provider_configs
        raw = await configs_reads.read_document(session, domain.defaults, tenant_id, None)
        document = json.loads(raw.body)
    return render(
        request,
        "configs.html",
        {
            "tenant_id": tenant_id,
            "document": document,
            "lists": [(kind, list_field(kind)) for kind in PROVIDER_TYPES],
        },
    )


async def _history(
    session: SessionDep, tenant_id: str, config_id: str, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    page = json.loads(
        await configs_history.history(
            session,
            tenant_id,
            provider_type=None,
            provider_name=None,
            config_id=config_id,
            limit=limit,
            cursor=cursor,
        )
    )
    return page["items"], page["next_cursor"]


@router.get("/configs/{tenant_id}/{config_id}")
async def config_history(
    request: Request,
    tenant_id: TenantIdPath,
    config_id: ConfigIdPath,
    console: ConsoleDep,
    session: SessionDep,
    cursor: Cursor = None,
) -> HTMLResponse:
    """The history a page at a time, newest first; comparing and restoring take any version."""
    items, next_cursor = await _history(
        session, tenant_id, config_id, limit=PAGE_SIZE, cursor=cursor
    )
    newest = items
    if cursor is not None:  # an older page: the version to roll back from is still the newest
        newest, _ = await _history(session, tenant_id, config_id, limit=1, cursor=None)
    return render(
        request,
        "config.html",
        {
            "tenant_id": tenant_id,
            "config_id": config_id,
            "items": items,
            "current": newest[0] if newest else None,
            "next_cursor": next_cursor,
        },
    )


@router.get("/configs/{tenant_id}/{config_id}/diff")
async def config_diff(
    request: Request,
    tenant_id: TenantIdPath,
    config_id: ConfigIdPath,
    console: ConsoleDep,
    session: SessionDep,
    from_version: Annotated[int, Query(alias="from", ge=0)],
    to_version: Annotated[int, Query(alias="to", ge=0)],
) -> HTMLResponse:
    """Two versions side by side: the fields the domain's diff names, before and after."""
    diff = json.loads(
        await configs_history.diff_versions(
            session, tenant_id, config_id, from_version=from_version, to_version=to_version
        )
    )
    return render(
        request,
        "config_diff.html",
        {"tenant_id": tenant_id, "config_id": config_id, "diff": diff},
    )


VersionField = Annotated[int, Form(ge=1)]
ExpectedField = Annotated[int, Form(ge=0)]
ReasonField = Annotated[str, Form(min_length=1, max_length=1000)]


def _rollback_request(
    config_id: str, version: int, expected_version: int, reason: str
) -> RollbackRequest:
    """The API's own rollback body, so the console refuses what the API refuses (a blank
    reason, a version past the largest, a NUL): as a 422 page, not an error of the server."""
    try:
        return RollbackRequest(
            config_id=config_id, version=version, expected_version=expected_version, reason=reason
        )
    except ValidationError as exc:
        raise invalid_fields(exc) from None


@router.post("/configs/{tenant_id}/{config_id}/rollback/preview")
async def rollback_preview(
    request: Request,
    tenant_id: TenantIdPath,
    config_id: ConfigIdPath,
    console: ConsoleDep,
    session: SessionDep,
    version: VersionField,
    expected_version: ExpectedField,
    reason: ReasonField,
) -> HTMLResponse:
    """What the rollback would change (the domain's dry run), and the button that makes it."""
    domain = app_state(request.app).provider_configs
    body = _rollback_request(config_id, version, expected_version, reason)
    preview = json.loads(await configs_service.preview_rollback(session, domain, tenant_id, body))
    return render(
        request,
        "rollback_preview.html",
        {
            "tenant_id": tenant_id,
            "config_id": config_id,
            "preview": preview,
            "expected_version": expected_version,
            "reason": reason,
        },
    )


@router.post("/configs/{tenant_id}/{config_id}/rollback")
async def rollback(
    request: Request,
    tenant_id: TenantIdPath,
    config_id: ConfigIdPath,
    console: ConsoleDep,
    session: SessionDep,
    version: VersionField,
    expected_version: ExpectedField,
    reason: ReasonField,
) -> Response:
    """Roll back with the version the page showed as `expected_version`: a page left open while
    someone else wrote gets the 409 of optimistic concurrency."""
    domain = app_state(request.app).provider_configs
    body = _rollback_request(config_id, version, expected_version, reason)
    await configs_service.rollback(session, domain, tenant_id, body, changed_by=console.subject)
    return see_other(f"/admin/configs/{tenant_id}/{config_id}?notice=rolled_back")

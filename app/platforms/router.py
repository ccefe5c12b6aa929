"""HTTP routes of the platforms domain: which platforms a branch (or a tenant) has connected."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.core.db import utcnow
from app.core.deps import CurrentPrincipal, SessionDep, TenantIdQuery
from app.platforms import service
from app.platforms.schemas import ConnectedPlatforms, PlatformsSummary
from app.state import app_state

router = APIRouter(tags=["platforms"])


@router.get(
    "/platforms/connected",
    summary="Connected platforms",
    response_model=ConnectedPlatforms | PlatformsSummary,
)
async def connected_platforms(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    tenant_id: TenantIdQuery = None,
    branch_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            pattern=r"^[^\x00]+$",
            description="omit for per-provider counts",
        ),
    ] = None,
) -> ConnectedPlatforms | PlatformsSummary:
    """A branch's status per provider, or without `branch_id` the tenant's counts per provider."""
    tenant = principal.resolve_tenant(tenant_id)
    registry = app_state(request.app).tokens.registry
    now = utcnow()
    if branch_id is None:
        summary = await service.tenant_summary(session, registry, tenant, now)
        return PlatformsSummary(tenant_id=tenant, platforms=summary)
    settings = app_state(request.app).settings
    platforms = await service.branch_platforms(session, registry, settings, tenant, branch_id, now)
    return ConnectedPlatforms(tenant_id=tenant, branch_id=branch_id, platforms=platforms)

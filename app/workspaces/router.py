"""Admin routes for workspaces (tenants): list, read, edit, offboard, and the offboarding log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.core import openapi
from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, TenantIdPath, TenantIdQuery
from app.core.pagination import PageCursor, PageLimit
from app.state import app_state
from app.workspaces import offboarding, service
from app.workspaces.models import Workspace, WorkspaceDeletion
from app.workspaces.schemas import (
    RevocationsRead,
    WorkspaceDeletionPage,
    WorkspaceDeletionRead,
    WorkspacePage,
    WorkspaceRead,
    WorkspaceUpdate,
)

router = APIRouter(prefix="/api/admin", tags=["workspaces"])


def _read(workspace: Workspace) -> WorkspaceRead:
    return WorkspaceRead(
        tenant_id=workspace.id,
        name=workspace.name,
        tier=workspace.tier,
        created_at=workspace.created_at,
        updated_at=workspace.updated_at,
    )


def _deletion(record: WorkspaceDeletion) -> WorkspaceDeletionRead:
    return WorkspaceDeletionRead(
        id=record.id,
        tenant_id=record.deleted_tenant_id,
        name=record.name,
        tier=record.tier,
        deleted_by=record.deleted_by,
        deleted_at=record.deleted_at,
        counts=record.counts,
        revocations=RevocationsRead.model_validate(record.revocations),
    )


@router.get("/workspaces", summary="List workspaces", response_model=WorkspacePage)
async def list_workspaces(
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    tier: Annotated[
        str | None, Query(min_length=1, max_length=32, description="only workspaces of this tier")
    ] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> WorkspacePage:
    """Every workspace, newest first; `tier` keeps one tier's."""
    service.check_tier(settings, tier)
    rows, next_cursor = await service.list_workspaces(
        session, tier=tier, limit=limit, cursor=cursor
    )
    return WorkspacePage(items=[_read(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/workspace-deletions",
    summary="List offboarding records",
    response_model=WorkspaceDeletionPage,
    responses=openapi.errors(400),
)
async def list_workspace_deletions(
    principal: CurrentPrincipal,
    session: SessionDep,
    tenant_id: TenantIdQuery = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> WorkspaceDeletionPage:
    """The record of each offboarding (who, when, rows deleted per table), newest first."""
    rows, next_cursor = await service.list_deletions(
        session, tenant_id=tenant_id, limit=limit, cursor=cursor
    )
    return WorkspaceDeletionPage(items=[_deletion(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/workspaces/{tenant_id}",
    summary="Read a workspace",
    response_model=WorkspaceRead,
    responses=openapi.errors(404),
)
async def read_workspace(
    tenant_id: TenantIdPath, principal: CurrentPrincipal, session: SessionDep
) -> WorkspaceRead:
    """One workspace; 404 for a tenant that has none (reading never creates it)."""
    principal.require_tenant(tenant_id)
    return _read(await service.get_workspace(session, tenant_id))


@router.put(
    "/workspaces/{tenant_id}", summary="Create or edit a workspace", response_model=WorkspaceRead
)
async def update_workspace(
    tenant_id: TenantIdPath,
    body: WorkspaceUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> WorkspaceRead:
    """Name or tier a workspace, creating it when it is new."""
    principal.require_tenant(tenant_id)
    workspace = await service.update_workspace(
        session, settings, tenant_id, name=body.name, tier=body.tier
    )
    return _read(workspace)


@router.delete(
    "/workspaces/{tenant_id}",
    summary="Offboard a workspace",
    response_model=WorkspaceDeletionRead,
    responses=openapi.errors(404),
)
async def offboard_workspace(
    request: Request, tenant_id: TenantIdPath, principal: CurrentPrincipal, session: SessionDep
) -> WorkspaceDeletionRead:
    """Offboard the tenant: revoke its connections at their providers (best effort, a few
    seconds at most), delete all its rows in one transaction and answer the counts per table."""
    principal.require_tenant(tenant_id)
    state = app_state(request.app)
    record = await offboarding.offboard(
        session, state.tokens, state.provider_configs, tenant_id, deleted_by=principal.sub
    )
    return _deletion(record)

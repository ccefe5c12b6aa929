"""Admin routes for workspaces (tenants)."""

from __future__ import annotations

from fastapi import APIRouter

from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, TenantIdPath
from app.workspaces import service
from app.workspaces.models import Workspace
from app.workspaces.schemas import WorkspaceRead, WorkspaceUpdate

router = APIRouter(prefix="/api/admin/workspaces", tags=["workspaces"])


def _read(workspace: Workspace) -> WorkspaceRead:
    return WorkspaceRead(
        tenant_id=workspace.id,
        name=workspace.name,
        tier=workspace.tier,
        created_at=workspace.created_at,
        updated_at=workspace.updated_at,
    )


@router.get("/{tenant_id}", response_model=WorkspaceRead)
async def read_workspace(
    tenant_id: TenantIdPath, principal: CurrentPrincipal, session: SessionDep
) -> WorkspaceRead:
    principal.require_tenant(tenant_id)
    return _read(await service.get_workspace(session, tenant_id))


@router.put("/{tenant_id}", response_model=WorkspaceRead)
async def update_workspace(
    tenant_id: TenantIdPath,
    body: WorkspaceUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> WorkspaceRead:
    principal.require_tenant(tenant_id)
    workspace = await service.update_workspace(
        session, settings, tenant_id, name=body.name, tier=body.tier
    )
    return _read(workspace)

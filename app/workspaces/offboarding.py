"""Offboarding a tenant: revoke its grants at the providers, delete every row it owns in one
transaction, forget it in every replica's caches, and keep a record of what went."""

from __future__ import annotations

from sqlalchemy import Table, delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import Base, after_commit, utcnow
from app.provider_configs import service as provider_configs_service
from app.provider_configs.service import Domain as ProviderConfigs
from app.tokens import connections as token_connections
from app.tokens.context import TokenContext
from app.workspaces import service
from app.workspaces.exceptions import WorkspaceNotFound
from app.workspaces.models import Workspace, WorkspaceDeletion

# All the provider revocations of one offboarding, together, take at most this long.
REVOKE_BUDGET_S = 5.0


def tenant_tables() -> list[Table]:
    """Every table with a `tenant_id` column, children before parents, read from the metadata so
    that a new table is covered without being listed here."""
    import app.models  # noqa: F401  (every domain's tables are in the metadata)

    return [table for table in reversed(Base.metadata.sorted_tables) if "tenant_id" in table.c]


async def delete_tenant_rows(session: AsyncSession, tenant_id: str) -> dict[str, int]:
    """Delete the tenant's rows from every table, its workspace last; counts per table."""
    counts: dict[str, int] = {}
    for table in tenant_tables():
        result = await session.execute(delete(table).where(table.c.tenant_id == tenant_id))
        counts[table.name] = int(result.rowcount)  # type: ignore[attr-defined]
    result = await session.execute(delete(Workspace).where(Workspace.id == tenant_id))
    counts[Workspace.__tablename__] = int(result.rowcount)  # type: ignore[attr-defined]
    return counts


async def offboard(
    session: AsyncSession,
    tokens: TokenContext,
    provider_configs: ProviderConfigs,
    tenant_id: str,
    *,
    deleted_by: str,
    revoke_budget_s: float = REVOKE_BUDGET_S,
) -> WorkspaceDeletion:
    """Remove the tenant; its caches are dropped on every replica once `session` commits.

    The revocations come first and outside the transaction (they wait on providers); a
    connection made between them and the delete is deleted without being revoked.
    """
    workspace = await service.find_workspace(session, tenant_id)
    name, tier = (workspace.name, workspace.tier) if workspace else (None, None)
    revocations = await token_connections.revoke_tenant_connections(
        tokens, tenant_id, budget_s=revoke_budget_s
    )
    counts = await delete_tenant_rows(session, tenant_id)
    if not any(counts.values()):
        raise WorkspaceNotFound(tenant_id)
    record = WorkspaceDeletion(
        deleted_tenant_id=tenant_id,
        name=name,
        tier=tier,
        deleted_by=deleted_by,
        deleted_at=utcnow(),
        counts=counts,
        revocations=revocations.as_dict(),
    )
    session.add(record)
    await session.flush()
    provider_configs_service.forget_tenant_after_commit(session, provider_configs, tenant_id)

    async def forget_tokens() -> None:
        await tokens.invalidate(tenant_id=tenant_id)

    after_commit(session, forget_tokens)
    return record

"""Workspaces and their tiers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import dialect_insert, utcnow
from app.core.errors import InvalidField
from app.core.pagination import TimeIdCursor
from app.workspaces.exceptions import WorkspaceNotFound
from app.workspaces.models import DEFAULT_TIER, Workspace, WorkspaceDeletion

# Monthly limits per tier; `USAGE_TIER_LIMITS` merges over these (and may add tiers).
DEFAULT_TIER_LIMITS: dict[str, dict[str, int]] = {
    "free": {"tokens": 100_000, "calls": 1_000},
    "pro": {"tokens": 5_000_000, "calls": 50_000},
    "enterprise": {"tokens": 100_000_000, "calls": 1_000_000},
}


def tier_limits(settings: Settings) -> dict[str, dict[str, int]]:
    merged = {tier: dict(limits) for tier, limits in DEFAULT_TIER_LIMITS.items()}
    for tier, limits in settings.usage_tier_limits.items():
        merged.setdefault(tier, {}).update(limits)
    return merged


async def ensure_workspace(session: AsyncSession, tenant_id: str) -> None:
    """Create the tenant's row on first use; a no-op (no lock, no error) when it exists."""
    await ensure_workspaces(session, [tenant_id])


async def ensure_workspaces(session: AsyncSession, tenant_ids: Iterable[str]) -> None:
    """ensure_workspace for several tenants in one statement, in id order (two transactions
    creating the same new tenants wait on each other rather than deadlock)."""
    now = utcnow()
    rows = [
        {"id": tenant_id, "tier": DEFAULT_TIER, "created_at": now, "updated_at": now}
        for tenant_id in sorted(set(tenant_ids))
    ]
    if rows:
        await session.execute(_ensure_statement(session), rows)


def _ensure_statement(session: AsyncSession) -> Any:
    # Built once per dialect: constructing it per call cost more than running it.
    name = session.get_bind().dialect.name
    if name not in _ENSURE:
        _ENSURE[name] = dialect_insert(session, Workspace.__table__).on_conflict_do_nothing(
            index_elements=["id"]
        )
    return _ENSURE[name]


_ENSURE: dict[str, Any] = {}


async def find_workspace(session: AsyncSession, tenant_id: str) -> Workspace | None:
    statement = select(Workspace).where(Workspace.id == tenant_id)
    return await session.scalar(statement.execution_options(populate_existing=True))


async def get_workspace(session: AsyncSession, tenant_id: str) -> Workspace:
    """An existing workspace; reading one never creates it (a write or PUT does)."""
    workspace = await find_workspace(session, tenant_id)
    if workspace is None:
        raise WorkspaceNotFound(tenant_id)
    return workspace


def check_tier(settings: Settings, tier: str | None) -> None:
    if tier is not None and tier not in tier_limits(settings):
        known = ", ".join(sorted(tier_limits(settings)))
        raise InvalidField("tier", f"unknown tier '{tier}' (known: {known})")


async def list_workspaces(
    session: AsyncSession,
    *,
    tier: str | None,
    limit: int,
    cursor: str | None,
    search: str | None = None,
) -> tuple[list[Workspace], str | None]:
    """Every workspace, newest first; keyset-paginated on (created_at, id). `search` keeps those
    whose id or name contains it (any case)."""
    query = select(Workspace)
    if tier is not None:
        query = query.where(Workspace.tier == tier)
    if search:
        pattern = (
            "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        query = query.where(
            or_(
                func.lower(Workspace.id).like(pattern, escape="\\"),
                func.lower(func.coalesce(Workspace.name, "")).like(pattern, escape="\\"),
            )
        )
    if cursor:
        after = TimeIdCursor.decode(cursor)
        query = query.where(tuple_(Workspace.created_at, Workspace.id) < (after.at, after.id))
    query = query.order_by(Workspace.created_at.desc(), Workspace.id.desc()).limit(limit + 1)
    rows = list((await session.scalars(query)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, TimeIdCursor(rows[-1].created_at, rows[-1].id).encode()


async def list_deletions(
    session: AsyncSession, *, tenant_id: str | None, limit: int, cursor: str | None
) -> tuple[list[WorkspaceDeletion], str | None]:
    """The offboarding records, newest first; keyset-paginated on (deleted_at, id)."""
    query = select(WorkspaceDeletion)
    if tenant_id is not None:
        query = query.where(WorkspaceDeletion.deleted_tenant_id == tenant_id)
    if cursor:
        after = TimeIdCursor.decode(cursor)
        query = query.where(
            tuple_(WorkspaceDeletion.deleted_at, WorkspaceDeletion.id) < (after.at, after.id)
        )
    query = query.order_by(WorkspaceDeletion.deleted_at.desc(), WorkspaceDeletion.id.desc())
    rows = list((await session.scalars(query.limit(limit + 1))).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, TimeIdCursor(rows[-1].deleted_at, rows[-1].id).encode()


async def get_tier(session: AsyncSession, tenant_id: str) -> str:
    tier = await session.scalar(select(Workspace.tier).where(Workspace.id == tenant_id))
    return tier or DEFAULT_TIER


async def update_workspace(
    session: AsyncSession,
    settings: Settings,
    tenant_id: str,
    *,
    name: str | None,
    tier: str | None,
) -> Workspace:
    """Edit the workspace, creating it first when it is new (PUT)."""
    check_tier(settings, tier)
    await ensure_workspace(session, tenant_id)
    workspace = await get_workspace(session, tenant_id)
    if name is not None:
        workspace.name = name
    if tier is not None:
        workspace.tier = tier
    workspace.updated_at = utcnow()
    await session.flush()
    return workspace

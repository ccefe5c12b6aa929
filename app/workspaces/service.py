"""Workspaces and their tiers."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import dialect_insert, utcnow
from app.core.errors import InvalidField
from app.workspaces.models import DEFAULT_TIER, Workspace

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
    statement = (
        dialect_insert(session, Workspace)
        .values(id=tenant_id, tier=DEFAULT_TIER, created_at=utcnow(), updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["id"])
    )
    await session.execute(statement)


async def get_workspace(session: AsyncSession, tenant_id: str) -> Workspace:
    # Read first: a known workspace is read without a write (and so in read-only maintenance).
    workspace = await session.scalar(select(Workspace).where(Workspace.id == tenant_id))
    if workspace is not None:
        return workspace
    await ensure_workspace(session, tenant_id)
    workspace = await session.scalar(select(Workspace).where(Workspace.id == tenant_id))
    assert workspace is not None
    return workspace


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
    if tier is not None and tier not in tier_limits(settings):
        known = ", ".join(sorted(tier_limits(settings)))
        raise InvalidField("tier", f"unknown tier '{tier}' (known: {known})")
    workspace = await get_workspace(session, tenant_id)
    if name is not None:
        workspace.name = name
    if tier is not None:
        workspace.tier = tier
    workspace.updated_at = utcnow()
    await session.flush()
    return workspace

"""A tenant's configuration history: its version rows, newest first, and what changed between
any two versions (the diff itself is app/provider_configs/diff.py's)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import RowIdCursor
from app.provider_configs import repository
from app.provider_configs.diff import diff_snapshots
from app.provider_configs.exceptions import ConfigNotFound, VersionNotFound
from app.provider_configs.rendering import render_diff, render_history


async def history(
    session: AsyncSession,
    tenant_id: str,
    *,
    provider_type: str | None,
    provider_name: str | None,
    config_id: str | None,
    limit: int,
    cursor: str | None,
) -> bytes:
    """Version rows newest first, serialized; `next_cursor` continues after the last item."""
    before_id = RowIdCursor.decode(cursor).row_id if cursor else None
    if config_id is not None and not await repository.config_exists(session, tenant_id, config_id):
        raise ConfigNotFound(f"configuration '{config_id}' not found")
    rows = await repository.history_page(
        session,
        tenant_id,
        provider_type=provider_type,
        provider_name=provider_name,
        config_id=config_id,
        before_id=before_id,
        limit=limit + 1,
    )
    page = rows[:limit]
    next_cursor = RowIdCursor(page[-1].id).encode() if len(rows) > limit else None
    previous = await repository.version_snapshots(
        session, ((row.config_id, row.version - 1) for row in page)
    )
    return render_history(page, previous, next_cursor)


async def diff_versions(
    session: AsyncSession,
    tenant_id: str,
    config_id: str,
    *,
    from_version: int | None,
    to_version: int | None,
) -> bytes:
    """What changed from one version of a configuration to another (either order; version 0 is
    the state before it existed). `to` defaults to the current version, `from` to the one
    before `to`."""
    config = await repository.find_config(session, tenant_id, config_id)
    if config is None or config.version == 0:
        raise ConfigNotFound(f"configuration '{config_id}' not found")
    to = config.version if to_version is None else to_version
    start = max(to - 1, 0) if from_version is None else from_version
    for number in (start, to):
        if number > config.version:
            raise VersionNotFound(
                f"configuration '{config_id}' has no version {number}",
                current_version=config.version,
            )
    snapshots = await repository.version_snapshots(session, [(config_id, start), (config_id, to)])
    changes = diff_snapshots(snapshots.get((config_id, start)), snapshots.get((config_id, to)))
    return render_diff(config, start, to, changes)

"""Connected platforms: each provider's connection status for a branch, or counts for a tenant.

The status is the tokens domain's (`app/tokens/timing.py`): for a branch computed per row, for a
tenant's summary in SQL, so it is one GROUP BY however many connections the tenant has.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.core.config import Settings
from app.platforms.schemas import PlatformStatus, ProviderSummary
from app.tokens import timing
from app.tokens.models import OAuthClient, OAuthConnection
from app.tokens.providers import ProviderRegistry


def _connection_of_client(*extra: ColumnElement[bool]) -> ColumnElement[bool]:
    """Join condition: a connection made with this client, of the same tenant."""
    return and_(
        OAuthConnection.client_id == OAuthClient.id,
        OAuthConnection.tenant_id == OAuthClient.tenant_id,
        *extra,
    )


async def branch_platforms(
    session: AsyncSession,
    registry: ProviderRegistry,
    settings: Settings,
    tenant_id: str,
    branch_id: str,
    now: datetime,
) -> list[PlatformStatus]:
    """One entry per provider the tenant has a client for, with this branch's connection."""
    statement = (
        select(
            OAuthClient.provider,
            OAuthClient.provider_settings,
            OAuthConnection.status,
            OAuthConnection.expires_at,
            OAuthConnection.token_lifetime_s,
            OAuthConnection.last_refreshed_at,
            OAuthConnection.last_error,
            OAuthConnection.refresh_token_expires_at,
        )
        .select_from(OAuthClient)
        .outerjoin(OAuthConnection, _connection_of_client(OAuthConnection.branch_id == branch_id))
        .where(OAuthClient.tenant_id == tenant_id)
        # A tenant may hold several clients for one provider; the connected one comes first.
        .order_by(OAuthClient.provider, OAuthConnection.id.is_(None))
    )
    platforms: dict[str, PlatformStatus] = {}
    for row in (await session.execute(statement)).all():
        if row.provider in platforms:
            continue
        status = timing.STATUS_DISCONNECTED
        if row.status is not None:
            spec = registry.resolve(row.provider, row.provider_settings)
            status = timing.connection_status(row.status, row, spec, now, registry.settings)
        platforms[row.provider] = PlatformStatus(
            provider=row.provider,
            connected=status in timing.CONNECTED_STATUSES,
            status=status,
            expires_at=row.expires_at,
            last_refreshed_at=row.last_refreshed_at,
            last_error=row.last_error,
            refresh_token_expires_at=row.refresh_token_expires_at,
            refresh_token_expiring=timing.refresh_token_expiring(row, settings, now),
        )
    return list(platforms.values())


async def tenant_summary(
    session: AsyncSession, registry: ProviderRegistry, tenant_id: str, now: datetime
) -> list[ProviderSummary]:
    """Per provider the tenant has a client for: its connections counted by status."""
    derived = (
        select(
            OAuthClient.provider.label("provider"),
            OAuthConnection.id.label("connection_id"),
            timing.connection_status_sql(session, registry, now).label("status"),
        )
        .select_from(OAuthClient)
        .outerjoin(OAuthConnection, _connection_of_client())
        .where(OAuthClient.tenant_id == tenant_id)
        .subquery()
    )
    statement = (
        select(derived.c.provider, derived.c.status, func.count(derived.c.connection_id))
        .group_by(derived.c.provider, derived.c.status)
        .order_by(derived.c.provider)
    )
    summaries: dict[str, ProviderSummary] = {}
    for provider, status, count in (await session.execute(statement)).all():
        summary = summaries.setdefault(
            provider,
            ProviderSummary(
                provider=provider,
                connections=0,
                statuses=dict.fromkeys(timing.CONNECTION_STATUSES, 0),
            ),
        )
        if status in summary.statuses:
            summary.statuses[status] += int(count)
            summary.connections += int(count)
    return list(summaries.values())

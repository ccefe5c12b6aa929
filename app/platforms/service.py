"""Connected platforms: each provider's connection status for a branch, or counts for a tenant.

The status is derived in SQL from the stored one and the token's expiry against its provider's
refresh margin, so the summary is one GROUP BY however many connections a tenant has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from app.core.db import is_postgres
from app.platforms.schemas import PlatformStatus, ProviderSummary
from app.tokens.models import (
    STATUS_NEEDS_REAUTH,
    STATUS_REFRESH_FAILED,
    OAuthClient,
    OAuthConnection,
)
from app.tokens.providers import ProviderRegistry, ProviderSpec

STATUS_EXPIRING = "expiring"
STATUS_EXPIRED = "expired"
STATUS_ACTIVE = "active"
STATUS_DISCONNECTED = "disconnected"
# Statuses a connection can be in (the summary counts these; "disconnected" means no row).
CONNECTION_STATUSES = (
    STATUS_ACTIVE,
    STATUS_EXPIRING,
    STATUS_EXPIRED,
    STATUS_REFRESH_FAILED,
    STATUS_NEEDS_REAUTH,
)
# A usable grant: a token, or a refresh that may still succeed.
CONNECTED_STATUSES = frozenset(
    {STATUS_ACTIVE, STATUS_EXPIRING, STATUS_EXPIRED, STATUS_REFRESH_FAILED}
)

# A custom provider that set no margin gets the spec's default, as app/tokens does.
_DEFAULT_MARGIN_S: int = ProviderSpec.refresh_margin_s


def _refresh_margin_s(registry: ProviderRegistry) -> ColumnElement[Any]:
    """A client's refresh margin: the registry's for built-ins, its settings' for custom ones."""
    builtin = {spec.name: spec.refresh_margin_s for spec in registry.all_builtin()}
    custom = func.coalesce(
        OAuthClient.provider_settings["refresh_margin_s"].as_float(), float(_DEFAULT_MARGIN_S)
    )
    return case(builtin, value=OAuthClient.provider, else_=custom)


def _epoch_s(session: AsyncSession, column: QueryableAttribute[Any]) -> ColumnElement[Any]:
    if is_postgres(session):
        return func.extract("epoch", column)
    # SQLite keeps datetimes as UTC text; julianday() reads it.
    return (func.julianday(column) - 2440587.5) * 86400.0


def _derived_status(
    session: AsyncSession, registry: ProviderRegistry, now: datetime
) -> ColumnElement[Any]:
    connection = OAuthConnection
    expires_within_margin = (
        _epoch_s(session, connection.expires_at) - _refresh_margin_s(registry) <= now.timestamp()
    )
    return case(
        (connection.id.is_(None), literal(STATUS_DISCONNECTED)),
        (
            connection.status.in_([STATUS_NEEDS_REAUTH, STATUS_REFRESH_FAILED]),
            connection.status,
        ),
        (connection.expires_at.is_(None), literal(STATUS_ACTIVE)),
        (connection.expires_at <= now, literal(STATUS_EXPIRED)),
        (expires_within_margin, literal(STATUS_EXPIRING)),
        else_=literal(STATUS_ACTIVE),
    )


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
    tenant_id: str,
    branch_id: str,
    now: datetime,
) -> list[PlatformStatus]:
    """One entry per provider the tenant has a client for, with this branch's connection."""
    statement = (
        select(
            OAuthClient.provider,
            _derived_status(session, registry, now).label("status"),
            OAuthConnection.expires_at,
            OAuthConnection.last_refreshed_at,
            OAuthConnection.last_error,
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
        platforms[row.provider] = PlatformStatus(
            provider=row.provider,
            connected=row.status in CONNECTED_STATUSES,
            status=row.status,
            expires_at=row.expires_at,
            last_refreshed_at=row.last_refreshed_at,
            last_error=row.last_error,
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
            _derived_status(session, registry, now).label("status"),
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
                statuses=dict.fromkeys(CONNECTION_STATUSES, 0),
            ),
        )
        if status in summary.statuses:
            summary.statuses[status] += int(count)
            summary.connections += int(count)
    return list(summaries.values())

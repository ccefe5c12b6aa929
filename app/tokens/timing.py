"""When a token is due for refresh, and the status a connection reports from that: the one rule.

`refresh_at` is the rule itself (a token is due its provider's margin before it expires);
everything else here, and every caller elsewhere (token reads, the refresh path, the monitoring
schedule, the platforms status), derives from it. `_refresh_at_epoch_sql` is the same rule for a
query that must count in SQL; the two are kept side by side so that a change to the rule is made
to both at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import case, func, literal
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from app.core.config import Settings
from app.core.db import is_postgres, utcnow
from app.tokens.models import (
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTH,
    STATUS_REFRESH_FAILED,
    OAuthClient,
    OAuthConnection,
)
from app.tokens.providers import ProviderRegistry, ProviderSpec

# Statuses derived when reporting, besides the stored ones (app/tokens/models.py).
STATUS_EXPIRING = "expiring"
STATUS_EXPIRED = "expired"
STATUS_DISCONNECTED = "disconnected"
# Statuses a connection can report ("disconnected" means there is no connection).
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


# --- the rule -------------------------------------------------------------------------------


def refresh_at(spec: ProviderSpec, expires_at: datetime) -> datetime:
    """When a token expiring at `expires_at` is due for refresh: its provider's margin before."""
    return expires_at - timedelta(seconds=spec.refresh_margin_s)


def needs_refresh(spec: ProviderSpec, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a token read at `now` must refresh first (a token that never expires never does)."""
    return expires_at is not None and refresh_at(spec, expires_at) <= now


def serve_for_s(spec: ProviderSpec, expires_at: datetime | None, now: datetime) -> float:
    """How long a token read at `now` may be served without looking again: until it is due."""
    if expires_at is None:
        return float("inf")
    return (refresh_at(spec, expires_at) - now).total_seconds()


# --- the refresh schedule -------------------------------------------------------------------


def compute_refresh_due_at(
    connection: OAuthConnection, spec: ProviderSpec, settings: Settings
) -> datetime | None:
    """When the monitoring loop should next refresh this connection (None: never)."""
    if connection.status == STATUS_NEEDS_REAUTH or connection.refresh_token_enc is None:
        return None
    base = connection.last_refreshed_at or connection.created_at or utcnow()
    # Some providers revoke refresh tokens left idle; refresh at least this often.
    due = base + timedelta(seconds=settings.monitor_idle_refresh_s)
    if connection.expires_at is not None:
        due = min(due, refresh_at(spec, connection.expires_at))
    warning_visit = _refresh_token_warning_visit(connection, settings)
    if warning_visit is not None:
        due = min(due, warning_visit)
    if connection.next_attempt_at is not None and connection.next_attempt_at > due:
        due = connection.next_attempt_at
    return due


def _refresh_token_warning_visit(
    connection: OAuthConnection, settings: Settings
) -> datetime | None:
    """When the loop must visit a connection whose refresh token lapses (where the provider
    says when), however long its access token lives: as the warning window opens. The visit
    refreshes it (a provider that rotates refresh tokens renews the grant) or raises
    `refresh_token_expiring`. Once per window: not after a refresh inside it, nor once warned."""
    if connection.refresh_token_expires_at is None or connection.refresh_token_warned_at:
        return None
    opens_at = connection.refresh_token_expires_at - timedelta(
        seconds=settings.refresh_token_expiry_warning_s
    )
    if connection.last_refreshed_at is not None and connection.last_refreshed_at >= opens_at:
        return None
    return opens_at


class HasRefreshTokenExpiry(Protocol):
    """A connection, or a row of a status query selecting its refresh token's expiry."""

    @property
    def refresh_token_expires_at(self) -> datetime | None: ...


def refresh_token_expiring(
    connection: HasRefreshTokenExpiry, settings: Settings, now: datetime
) -> bool:
    """Whether the connection's refresh token lapses within REFRESH_TOKEN_EXPIRY_WARNING_S of
    `now` (False when its provider gave no expiry): its user should reconnect soon. Status
    reports call this; the refresh path raises `refresh_token_expiring` from it."""
    expires_at = connection.refresh_token_expires_at
    if expires_at is None:
        return False
    return expires_at - now <= timedelta(seconds=settings.refresh_token_expiry_warning_s)


def refresh_is_due(connection: OAuthConnection, spec: ProviderSpec, now: datetime) -> bool:
    """Whether the refresh path should call the provider for this connection now."""
    if connection.next_attempt_at is not None and connection.next_attempt_at > now:
        return False  # cooldown after a failure
    # Within the provider's current margin is always due, whatever refresh_due_at was computed
    # with (the client's margin may have been edited since).
    if needs_refresh(spec, connection.expires_at, now):
        return True
    due = connection.refresh_due_at
    return due is None or due <= now


# --- status ---------------------------------------------------------------------------------


def connection_status(
    stored_status: str, expires_at: datetime | None, spec: ProviderSpec, now: datetime
) -> str:
    """The status a connection reports: its stored one when that is a failure, else from its
    token's expiry."""
    if stored_status in (STATUS_NEEDS_REAUTH, STATUS_REFRESH_FAILED):
        return stored_status
    if expires_at is None:
        return STATUS_ACTIVE
    if expires_at <= now:
        return STATUS_EXPIRED
    if needs_refresh(spec, expires_at, now):
        return STATUS_EXPIRING
    return STATUS_ACTIVE


def connection_status_sql(
    session: AsyncSession, registry: ProviderRegistry, now: datetime
) -> ColumnElement[Any]:
    """`connection_status` as a column, over `OAuthConnection` joined to its `OAuthClient`, for
    a query that groups or counts by status; an outer join's missing connection is
    "disconnected"."""
    connection = OAuthConnection
    due = _refresh_at_epoch_sql(session, registry) <= now.timestamp()
    return case(
        (connection.id.is_(None), literal(STATUS_DISCONNECTED)),
        (
            connection.status.in_([STATUS_NEEDS_REAUTH, STATUS_REFRESH_FAILED]),
            connection.status,
        ),
        (connection.expires_at.is_(None), literal(STATUS_ACTIVE)),
        (connection.expires_at <= now, literal(STATUS_EXPIRED)),
        (due, literal(STATUS_EXPIRING)),
        else_=literal(STATUS_ACTIVE),
    )


def _refresh_at_epoch_sql(session: AsyncSession, registry: ProviderRegistry) -> ColumnElement[Any]:
    """`refresh_at` in SQL, in epoch seconds: the expiry less the client's refresh margin (the
    registry's for built-in providers, its own settings' for custom ones, as `resolve` gives)."""
    builtin = {spec.name: spec.refresh_margin_s for spec in registry.all_builtin()}
    custom = func.coalesce(
        OAuthClient.provider_settings["refresh_margin_s"].as_float(),
        float(ProviderSpec.refresh_margin_s),  # the default of a spec that sets none
    )
    margin_s = case(builtin, value=OAuthClient.provider, else_=custom)
    return _epoch_s(session, OAuthConnection.expires_at) - margin_s


def _epoch_s(session: AsyncSession, column: QueryableAttribute[Any]) -> ColumnElement[Any]:
    if is_postgres(session):
        return func.extract("epoch", column)
    # SQLite keeps datetimes as UTC text; julianday() reads it.
    return (func.julianday(column) - 2440587.5) * 86400.0

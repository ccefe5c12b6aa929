"""When a token is due for refresh, and the status a connection reports from that: the one rule.

`refresh_at` is the rule itself: a token is due its effective margin before it expires, the
provider's margin (at least `TOKEN_REFRESH_MARGIN_FLOOR_S`) but never more than half the lifetime
it was issued with, so a token that lives less than its provider's margin is not due the moment
it is issued. Everything else here, and every caller elsewhere (token reads, the refresh path,
the read cache, the monitoring schedule, the platforms status), derives from it; besides it, a
minimum interval between two automatic refreshes of one connection (`should_refresh`).
`_refresh_at_epoch_sql` is the same rule for a query that must count in SQL; the two are kept
side by side so that a change to the rule is made to both at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, case, func, literal
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


class TimedToken(Protocol):
    """What the rule reads of a token: a connection row, or a token read's plain row."""

    @property
    def expires_at(self) -> datetime | None: ...

    @property
    def token_lifetime_s(self) -> int | None: ...

    @property
    def last_refreshed_at(self) -> datetime | None: ...


def margin_s(spec: ProviderSpec, lifetime_s: int | None, settings: Settings) -> float:
    """The effective margin: the provider's, at least the floor, at most half the lifetime the
    token was issued with (unknown for rows stored before it was kept: the provider's)."""
    margin = max(float(spec.refresh_margin_s), settings.token_refresh_margin_floor_s)
    if lifetime_s is not None:
        margin = min(margin, lifetime_s / 2)
    return margin


def refresh_at(
    spec: ProviderSpec, expires_at: datetime, lifetime_s: int | None, settings: Settings
) -> datetime:
    """When a token expiring at `expires_at` is due for refresh: its effective margin before."""
    return expires_at - timedelta(seconds=margin_s(spec, lifetime_s, settings))


def needs_refresh(spec: ProviderSpec, token: TimedToken, now: datetime, settings: Settings) -> bool:
    """Whether the token is due at `now` (a token that never expires never is)."""
    expires_at = token.expires_at
    return (
        expires_at is not None
        and refresh_at(spec, expires_at, token.token_lifetime_s, settings) <= now
    )


def min_interval_s(spec: ProviderSpec, settings: Settings) -> float:
    """The least time between two automatic refreshes of one connection."""
    if spec.min_refresh_interval_s is not None:
        return spec.min_refresh_interval_s
    return settings.token_refresh_min_interval_s


def _interval_ends_at(spec: ProviderSpec, token: TimedToken, settings: Settings) -> datetime | None:
    if token.last_refreshed_at is None:
        return None
    return token.last_refreshed_at + timedelta(seconds=min_interval_s(spec, settings))


def should_refresh(
    spec: ProviderSpec, token: TimedToken, now: datetime, settings: Settings
) -> bool:
    """Whether an automatic refresh (a token read, the loop) calls the provider now: the token is
    due and the minimum interval since its last refresh has passed. A token that has actually
    expired is refreshed inside the interval too: refreshing it is never early, and an expired
    token serves nobody (single flight still makes one call of a crowd of readers)."""
    if not needs_refresh(spec, token, now, settings):
        return False
    assert token.expires_at is not None
    if token.expires_at <= now:
        return True
    ends_at = _interval_ends_at(spec, token, settings)
    return ends_at is None or ends_at <= now


def serve_for_s(spec: ProviderSpec, token: TimedToken, now: datetime, settings: Settings) -> float:
    """How long a token read at `now` may be served without looking again: until an automatic
    refresh would act on it (`should_refresh`)."""
    if token.expires_at is None:
        return float("inf")
    until = refresh_at(spec, token.expires_at, token.token_lifetime_s, settings)
    ends_at = _interval_ends_at(spec, token, settings)
    if ends_at is not None and ends_at > until:
        until = min(ends_at, token.expires_at)
    return (until - now).total_seconds()


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
        due = min(
            due, refresh_at(spec, connection.expires_at, connection.token_lifetime_s, settings)
        )
    ends_at = _interval_ends_at(spec, connection, settings)
    if ends_at is not None and ends_at > due:
        due = ends_at
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


def refresh_is_due(
    connection: OAuthConnection, spec: ProviderSpec, now: datetime, settings: Settings
) -> bool:
    """Whether the refresh path should call the provider for this connection now (an automatic
    refresh; a forced one does not ask)."""
    if connection.next_attempt_at is not None and connection.next_attempt_at > now:
        return False  # cooldown after a failure
    # Due by the current rule is decided by it, whatever refresh_due_at was computed with (the
    # client's margin may have been edited since).
    if needs_refresh(spec, connection, now, settings):
        return should_refresh(spec, connection, now, settings)
    ends_at = _interval_ends_at(spec, connection, settings)
    if ends_at is not None and ends_at > now:
        return False
    due = connection.refresh_due_at
    return due is None or due <= now


# --- status ---------------------------------------------------------------------------------


def connection_status(
    stored_status: str, token: TimedToken, spec: ProviderSpec, now: datetime, settings: Settings
) -> str:
    """The status a connection reports: its stored one when that is a failure, else from its
    token's expiry ("expiring": due by the rule)."""
    if stored_status in (STATUS_NEEDS_REAUTH, STATUS_REFRESH_FAILED):
        return stored_status
    if token.expires_at is None:
        return STATUS_ACTIVE
    if token.expires_at <= now:
        return STATUS_EXPIRED
    if needs_refresh(spec, token, now, settings):
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
    """`refresh_at` in SQL, in epoch seconds: the expiry less `margin_s`, the client's refresh
    margin (the registry's for built-in providers, its own settings' for custom ones, as
    `resolve` gives) raised to the floor and capped at half the token's lifetime."""
    floor_s = registry.settings.token_refresh_margin_floor_s
    builtin = {
        spec.name: max(float(spec.refresh_margin_s), floor_s) for spec in registry.all_builtin()
    }
    custom_s = func.coalesce(
        OAuthClient.provider_settings["refresh_margin_s"].as_float(),
        float(ProviderSpec.refresh_margin_s),  # the default of a spec that sets none
    )
    custom = case((custom_s < floor_s, literal(floor_s)), else_=custom_s)
    provider_s = case(builtin, value=OAuthClient.provider, else_=custom)
    half_lifetime_s = OAuthConnection.token_lifetime_s * 0.5
    effective_s = case(
        (
            and_(OAuthConnection.token_lifetime_s.is_not(None), half_lifetime_s < provider_s),
            half_lifetime_s,
        ),
        else_=provider_s,
    )
    return _epoch_s(session, OAuthConnection.expires_at) - effective_s


def _epoch_s(session: AsyncSession, column: QueryableAttribute[Any]) -> ColumnElement[Any]:
    if is_postgres(session):
        return func.extract("epoch", column)
    # SQLite keeps datetimes as UTC text; julianday() reads it.
    return (func.julianday(column) - 2440587.5) * 86400.0

"""What a refresh (or a login) writes on a connection's row: a new token set, a failure and its
backoff, the refresh-token warning. No I/O: the caller stores what changed."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.core.config import Settings
from app.tokens import oauth, timing
from app.tokens.context import TokenContext
from app.tokens.exceptions import ProviderError
from app.tokens.models import (
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTH,
    STATUS_REFRESH_FAILED,
    OAuthConnection,
)
from app.tokens.providers import ProviderSpec
from app.tokens.refresh_outcome import RefreshResult
from app.tokens.sealing import seal_access_token, seal_refresh_token


def apply_token_set(
    ctx: TokenContext,
    connection: OAuthConnection,
    spec: ProviderSpec,
    tokens: oauth.TokenSet,
    now: datetime,
) -> None:
    """Store a new token set on the row; a response without a refresh token keeps the old one."""
    seal_access_token(ctx.keyring, connection, tokens.access_token)
    if tokens.refresh_token is not None:
        seal_refresh_token(ctx.keyring, connection, tokens.refresh_token)
    _apply_refresh_token_expiry(connection, tokens, now)
    connection.token_type = tokens.token_type
    if tokens.scope is not None:
        connection.scope = tokens.scope
    connection.expires_at = (
        now + timedelta(seconds=tokens.expires_in) if tokens.expires_in is not None else None
    )
    # The lifetime bounds the token's refresh margin (app/tokens/timing.py).
    connection.token_lifetime_s = tokens.expires_in
    connection.status = STATUS_ACTIVE
    connection.last_refreshed_at = now
    connection.last_error = None
    connection.failure_count = 0
    connection.next_attempt_at = None
    connection.updated_at = now
    connection.refresh_due_at = timing.compute_refresh_due_at(connection, spec, ctx.settings)


def _apply_refresh_token_expiry(
    connection: OAuthConnection, tokens: oauth.TokenSet, now: datetime
) -> None:
    """`refresh_token_expires_in`, where the provider sends it: a new refresh token without it
    has an unknown expiry (NULL) and may be warned of anew; a response without a new refresh
    token keeps the old expiry unless it states one."""
    if tokens.refresh_token is not None:
        connection.refresh_token_expires_at = None
        connection.refresh_token_warned_at = None
    if tokens.refresh_token_expires_in is not None:
        connection.refresh_token_expires_at = now + timedelta(
            seconds=tokens.refresh_token_expires_in
        )


def backoff_delay_s(settings: Settings, failure_count: int) -> float:
    """Cooldown after the n-th consecutive failure: cooldown, 2x, 4x ... capped."""
    exponent = max(failure_count - 1, 0)
    delay = settings.token_refresh_cooldown_s * (2 ** min(exponent, 30))
    return float(min(delay, settings.token_refresh_backoff_max_s))


def apply_failure(
    ctx: TokenContext,
    connection: OAuthConnection,
    spec: ProviderSpec,
    error: ProviderError,
    now: datetime,
) -> RefreshResult:
    connection.failure_count = (connection.failure_count or 0) + 1
    connection.last_error = error.code[:255]
    connection.updated_at = now
    if error.revokes_grant:
        connection.status = STATUS_NEEDS_REAUTH
        connection.next_attempt_at = None
        connection.refresh_due_at = None
        return RefreshResult.NEEDS_REAUTH
    connection.status = STATUS_REFRESH_FAILED
    delay = backoff_delay_s(ctx.settings, connection.failure_count)
    if error.retry_after_s is not None:
        # The provider said when to come back (429 or 503 with Retry-After): not before then.
        delay = max(delay, error.retry_after_s)
    connection.next_attempt_at = now + timedelta(seconds=delay)
    connection.refresh_due_at = timing.compute_refresh_due_at(connection, spec, ctx.settings)
    return RefreshResult.REFRESH_FAILED


def mark_refresh_token_warning(
    ctx: TokenContext, connection: OAuthConnection, *, issued_now: bool, now: datetime
) -> bool:
    """Whether this change raises `refresh_token_expiring` (and marks the row warned): once per
    refresh token, when it lapses within the warning window and this change did not just issue
    it (a provider that rotates refresh tokens renews the grant with each refresh)."""
    if issued_now or connection.refresh_token_warned_at is not None:
        return False
    if connection.status == STATUS_NEEDS_REAUTH:
        return False  # the grant is gone already; needs_reauth says so
    if not timing.refresh_token_expiring(connection, ctx.settings, now):
        return False
    connection.refresh_token_warned_at = now
    return True

"""Token reads: a usable access token for a branch (refreshed first when due), forced refresh."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import select, update

from app.core.crypto import DecryptionError, Sealed
from app.core.db import utcnow
from app.tokens import repository, timing
from app.tokens.answer import TokenAnswer
from app.tokens.context import TokenContext
from app.tokens.exceptions import (
    ClientMisconfigured,
    ConnectionNotFound,
    NeedsReauth,
    RefreshInProgress,
    RefreshNotSupported,
    RefreshUnavailable,
)
from app.tokens.models import STATUS_NEEDS_REAUTH, OAuthConnection
from app.tokens.providers import ProviderSpec
from app.tokens.refresh import (
    SECRET_REASONS,
    UNDECRYPTABLE,
    UNKNOWN_ENCRYPTION_KEY,
    RefreshOutcome,
    RefreshResult,
    refresh_connection,
)
from app.tokens.sealing import sealed_access_token

logger = logging.getLogger("junction.tokens")

# What a refresh that could not open the connection's stored secrets answers: the fault is the
# service's keys, not the provider (which was not called).
_SECRET_DETAILS = {
    UNKNOWN_ENCRYPTION_KEY: (
        "the connection's stored secrets were encrypted under a key that is not in "
        "ENCRYPTION_KEYS; the provider was not called (an operator must add the key back)"
    ),
    UNDECRYPTABLE: (
        "the connection's stored secrets do not decrypt (altered or moved); the provider was "
        "not called"
    ),
}

# A connection's last_used_at is written at most this often, so hot reads stay read-only.
_LAST_USED_RESOLUTION_S = 60.0
_LAST_USED_RESOLUTION = timedelta(seconds=_LAST_USED_RESOLUTION_S)


@dataclass(slots=True)
class TokenView:
    """A token read's answer: the rendering of its row and the access token, decrypted for it."""

    answer: TokenAnswer
    access_token: str
    expires_at: datetime | None

    def json(self) -> bytes:
        return self.answer.json(self.access_token)


@dataclass(frozen=True)
class TokenRow:
    """What a token read needs of a connection; plain data, read in one query."""

    id: str
    tenant_id: str
    provider: str
    branch_id: str
    access_token_enc: str
    token_type: str
    scope: str | None
    expires_at: datetime | None
    token_lifetime_s: int | None
    last_refreshed_at: datetime | None
    status: str
    last_error: str | None
    last_used_at: datetime | None
    next_attempt_at: datetime | None
    spec: ProviderSpec


async def find_token_row(
    ctx: TokenContext, tenant_id: str, provider: str, branch_id: str
) -> TokenRow:
    """The tenant's connection for the branch, read on a bare connection (ConnectionNotFound)."""
    async with ctx.engine.connect() as conn:
        row = await repository.read_token_row(conn, tenant_id, provider, branch_id)
    if row is None:
        raise ConnectionNotFound(f"no connection for provider '{provider}' and this branch_id")
    values = row._asdict()
    provider_settings = values.pop("provider_settings") or {}
    return TokenRow(**values, spec=ctx.registry.resolve(row.provider, provider_settings))


def _raise_needs_reauth(connection: TokenRow) -> None:
    raise NeedsReauth(
        f"the {connection.provider} grant for this branch_id is no longer valid "
        f"({connection.last_error or 'revoked'}); log in again",
        reason=connection.last_error,
    )


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a row's reads share: its answer rendered, its access token parsed (still sealed)."""

    answer: TokenAnswer
    sealed: Sealed
    expires_at: datetime | None


def _prepare(ctx: TokenContext, connection: TokenRow) -> _Prepared:
    answer = TokenAnswer.of(
        connection.provider,
        connection.branch_id,
        connection.token_type,
        connection.expires_at,
        connection.scope,
    )
    try:
        sealed = sealed_access_token(
            ctx.keyring, connection.tenant_id, connection.id, connection.access_token_enc
        )
    except DecryptionError as exc:
        _undecryptable(connection.id, exc)
    return _Prepared(answer, sealed, connection.expires_at)


def _opened(prepared: _Prepared, connection_id: str) -> TokenView:
    """The answer of a token read, with the access token decrypted for it (and for it only)."""
    try:
        return TokenView(prepared.answer, prepared.sealed.open(), prepared.expires_at)
    except DecryptionError as exc:
        _undecryptable(connection_id, exc)


def _undecryptable(connection_id: str, exc: DecryptionError) -> NoReturn:
    logger.error("access token of connection %s does not decrypt", connection_id)
    raise NeedsReauth("the stored token cannot be decrypted; log in again") from exc


async def _view(ctx: TokenContext, connection: TokenRow) -> TokenView:
    view = _opened(_prepare(ctx, connection), connection.id)
    await _touch(ctx, connection.id, connection.last_used_at)
    return view


async def _touch(ctx: TokenContext, connection_id: str, last_used_at: datetime | None) -> datetime:
    """Write last_used_at when the recorded one is over a minute old; the time now on record."""
    now = utcnow()
    if last_used_at is not None and last_used_at >= now - _LAST_USED_RESOLUTION:
        return last_used_at
    if ctx.settings.read_only:  # maintenance: a hint is not worth a write
        return last_used_at or now
    # SKIP LOCKED: a refresh holding the row lock through its provider call must not hold up a
    # read of the still-valid token; last_used_at is only a hint and waits a minute.
    row = (
        select(OAuthConnection.id)
        .where(OAuthConnection.id == connection_id)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    async with ctx.sessionmaker() as session, session.begin():
        await session.execute(
            update(OAuthConnection).where(OAuthConnection.id == row).values(last_used_at=now)
        )
    return now


def _next_touch(last_used_at: datetime | None) -> float:
    """When (time.monotonic()) a cached read is next to ask `_touch` to write last_used_at: a
    resolution after the one on record."""
    if last_used_at is None:
        return 0.0
    age_s = (utcnow() - last_used_at).total_seconds()
    return time.monotonic() + _LAST_USED_RESOLUTION_S - age_s


async def read_token(ctx: TokenContext, tenant_id: str, provider: str, branch_id: str) -> TokenView:
    """A usable access token, refreshed first when it is due (`timing.should_refresh`).

    A row read within the last `TOKEN_READ_CACHE_TTL_S` answers from process memory until its
    refresh is due (see `read_cache`). Otherwise it uses short sessions of its own rather than the
    request's: a reader waiting for another worker's refresh must not hold a pooled connection.
    """
    cache = ctx.read_cache
    key = (tenant_id, provider, branch_id)
    entry = cache.get(key)
    if entry is not None:
        view = _opened(entry.prepared, entry.row.id)
        if time.monotonic() >= entry.touch_at:
            entry.last_used_at = await _touch(ctx, entry.row.id, entry.last_used_at)
            entry.touch_at = _next_touch(entry.last_used_at)
        return view
    epoch = cache.epoch
    connection = await find_token_row(ctx, tenant_id, provider, branch_id)
    if connection.status == STATUS_NEEDS_REAUTH:
        _raise_needs_reauth(connection)
    now = utcnow()
    # Not due, or due but inside the minimum interval since the last refresh: it serves. In
    # maintenance a token that still works serves rather than be refreshed (and refused).
    if not timing.should_refresh(connection.spec, connection, now, ctx.settings) or (
        ctx.settings.read_only and connection.expires_at is not None and connection.expires_at > now
    ):
        prepared = _prepare(ctx, connection)
        view = _opened(prepared, connection.id)
        last_used_at = await _touch(ctx, connection.id, connection.last_used_at)
        serve_for_s = timing.serve_for_s(connection.spec, connection, now, ctx.settings)
        touch_at = _next_touch(last_used_at)
        cache.put(key, connection, prepared, epoch, serve_for_s, last_used_at, touch_at)
        return view
    outcome = await refresh_connection(ctx, connection.id, trigger="read")
    connection = await find_token_row(ctx, tenant_id, provider, branch_id)
    if connection.status == STATUS_NEEDS_REAUTH:
        _raise_needs_reauth(connection)
    if connection.expires_at is not None and connection.expires_at <= utcnow():
        if outcome.error == "refresh_in_progress":
            raise RefreshInProgress("another worker is refreshing this token; retry shortly")
        if outcome.result == RefreshResult.CLIENT_MISCONFIGURED:
            _raise_client_misconfigured(connection, outcome)
        raise RefreshUnavailable(
            "the token has expired and the provider could not refresh it "
            f"({connection.last_error or 'unknown'}); retry after retry_at",
            **_retry_after(connection.next_attempt_at),
            reason=connection.last_error,
        )
    # Still valid (maybe within the margin after a failed refresh): the old token serves.
    return await _view(ctx, connection)


def _raise_client_misconfigured(connection: TokenRow, outcome: RefreshOutcome) -> None:
    raise ClientMisconfigured(
        f"the token has expired and cannot be refreshed: the {connection.provider} client is "
        f"misconfigured (the provider refused the app: {outcome.error}); no refresh is tried "
        "until the client is edited (PATCH /token-management/clients/{client_id})",
        reason="client_misconfigured",
    )


def _retry_after(next_attempt_at: datetime | None) -> dict[str, Any]:
    """`retry_at` for the body and, while it is ahead, a `Retry-After` header (seconds)."""
    if next_attempt_at is None:
        return {"retry_at": None}
    wait_s = math.ceil((next_attempt_at - utcnow()).total_seconds())
    headers = {"Retry-After": str(wait_s)} if wait_s > 0 else None
    return {"retry_at": next_attempt_at.isoformat(), "headers": headers}


async def force_refresh(
    ctx: TokenContext, tenant_id: str, provider: str, branch_id: str
) -> TokenView:
    connection = await find_token_row(ctx, tenant_id, provider, branch_id)
    if connection.status == STATUS_NEEDS_REAUTH:
        _raise_needs_reauth(connection)
    outcome = await refresh_connection(ctx, connection.id, force=True, trigger="forced")
    connection = await find_token_row(ctx, tenant_id, provider, branch_id)
    if outcome.result == RefreshResult.NEEDS_REAUTH:
        _raise_needs_reauth(connection)
    if outcome.result == RefreshResult.REFRESH_FAILED and outcome.error in SECRET_REASONS:
        raise RefreshUnavailable(_SECRET_DETAILS[outcome.error], reason=outcome.error)
    if outcome.result == RefreshResult.CLIENT_MISCONFIGURED:
        _raise_client_misconfigured(connection, outcome)
    if outcome.result == RefreshResult.REFRESH_FAILED:
        raise RefreshUnavailable(
            f"the provider did not refresh the token ({outcome.error})",
            **_retry_after(connection.next_attempt_at),
            reason=outcome.error,
        )
    if outcome.result != RefreshResult.REFRESHED:
        if outcome.error == "no_refresh_token":
            raise RefreshNotSupported(f"{provider} issued no refresh token for this connection")
        raise RefreshInProgress("another worker is refreshing this token; retry shortly")
    return await _view(ctx, connection)

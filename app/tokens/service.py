"""Token management: clients, the OAuth login flow, fresh-token reads, refresh and disconnect."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import netguard
from app.core.auth import Principal
from app.core.config import Settings
from app.core.crypto import DecryptionError, Keyring
from app.core.db import after_commit, new_id, utcnow
from app.core.errors import Conflict, InvalidInput, UpstreamError
from app.tokens import oauth, repository
from app.tokens.exceptions import (
    ClientNotFound,
    ConnectionNotFound,
    InvalidState,
    NeedsReauth,
    ProviderError,
    RefreshInProgress,
    RefreshUnavailable,
)
from app.tokens.models import (
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTH,
    OAuthClient,
    OAuthConnection,
    OAuthState,
)
from app.tokens.providers import (
    CUSTOM_FIELDS,
    URL_FIELDS,
    ProviderRegistry,
    ProviderSpec,
    custom_spec,
)
from app.tokens.refresh import (
    RESULT_NEEDS_REAUTH,
    RESULT_REFRESH_FAILED,
    RESULT_REFRESHED,
    RefreshOutcome,
    StatusChange,
    StatusListener,
    TokenContext,
    apply_token_set,
    compute_refresh_due_at,
    notify_status_change,
    refresh_connection,
)
from app.tokens.schemas import ClientCreate, ClientUpdate
from app.tokens.sealing import (
    open_access_token,
    open_client_secret,
    open_code_verifier,
    open_refresh_token,
    open_stored_access_token,
    seal_client_secret,
    seal_code_verifier,
)
from app.workspaces.service import ensure_workspace

__all__ = [
    "CallbackResult",
    "LoginStart",
    "RefreshOutcome",
    "StatusChange",
    "StatusListener",
    "TokenContext",
    "TokenView",
    "complete_callback",
    "compute_refresh_due_at",
    "create_client",
    "delete_client",
    "disconnect",
    "force_refresh",
    "get_client",
    "list_clients",
    "read_token",
    "refresh_connection",
    "start_login",
    "update_client",
]

logger = logging.getLogger("junction.tokens")

# A connection's last_used_at is written at most this often, so hot reads stay read-only.
_LAST_USED_RESOLUTION = timedelta(seconds=60)
# The custom provider URLs Junction itself calls (with the client secret and tokens).
SERVER_CALLED_URL_FIELDS = ("token_url", "refresh_url", "revoke_url")
# What of a provider's `error=` we pass on to the return URL: an OAuth error code, nothing else.
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")


@dataclass(frozen=True)
class LoginStart:
    authorization_url: str
    state: str
    expires_at: datetime


@dataclass(frozen=True)
class CallbackResult:
    connected: bool
    provider: str
    branch_id: str
    return_url: str | None
    reason: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class TokenView:
    provider: str
    branch_id: str
    access_token: str
    token_type: str
    expires_at: datetime | None
    scope: str | None


# --- clients --------------------------------------------------------------------------------


def _custom_settings_for(
    registry: ProviderRegistry, provider: str, fields: dict[str, Any], *, creating: bool
) -> dict[str, Any]:
    if registry.is_builtin(provider):
        if fields:
            name = sorted(fields)[0]
            raise InvalidInput(
                f"{name}: only a custom provider takes its own URLs and options; "
                f"'{provider}' is built in (its URLs are overridden in settings)",
                fields=[{"field": name, "message": "only for custom providers"}],
            )
        return {}
    if creating:
        for required in ("authorization_url", "token_url"):
            if not fields.get(required):
                raise InvalidInput(
                    f"{required}: required for the custom provider '{provider}'",
                    fields=[{"field": required, "message": "required for a custom provider"}],
                )
    return fields


async def _check_custom(
    settings: Settings, provider: str, provider_settings: dict[str, Any]
) -> None:
    try:
        custom_spec(provider, provider_settings)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc)) from exc
    if settings.is_dev:
        return
    # Outside development a tenant's URLs must not reach this host's own services: Junction
    # posts client secrets and refresh tokens to them.
    for name in URL_FIELDS:
        url = provider_settings.get(name)
        if url is not None and urlsplit(str(url)).scheme != "https":
            raise InvalidInput(
                f"{name}: must be an https URL (http to localhost only in development)",
                fields=[{"field": name, "message": "must be an https URL"}],
            )
    # Every call is checked again (DNS can change); this tells the tenant early. The
    # authorization URL is only ever opened by the user's browser, so it may be anything.
    for name in SERVER_CALLED_URL_FIELDS:
        url = provider_settings.get(name)
        if url is None:
            continue
        try:
            await netguard.ensure_public_destination(str(url), allow_private=False)
        except netguard.UnsafeDestination as exc:
            raise InvalidInput(
                f"{name}: {exc}",
                code="unsafe_destination",
                fields=[{"field": name, "message": "must resolve to a public address"}],
            ) from None


async def create_client(
    session: AsyncSession,
    keyring: Keyring,
    registry: ProviderRegistry,
    settings: Settings,
    tenant_id: str,
    body: ClientCreate,
) -> OAuthClient:
    provider_settings = _custom_settings_for(
        registry, body.provider, body.custom_settings(), creating=True
    )
    if provider_settings:
        await _check_custom(settings, body.provider, provider_settings)
    redirect_uri = body.redirect_uri or settings.oauth_callback_url
    if not redirect_uri:
        raise InvalidInput(
            "redirect_uri: required (no OAUTH_CALLBACK_URL is configured)",
            fields=[{"field": "redirect_uri", "message": "required"}],
        )
    spec = registry.resolve(body.provider, provider_settings)
    await ensure_workspace(session, tenant_id)
    now = utcnow()
    client = OAuthClient(
        id=new_id(),
        tenant_id=tenant_id,
        provider=body.provider,
        name=body.name,
        client_id=body.client_id,
        redirect_uri=redirect_uri,
        scopes=body.scopes if body.scopes is not None else list(spec.default_scopes),
        return_urls=body.return_urls,
        provider_settings=provider_settings,
        workspace_info=body.workspace_info,
        created_at=now,
        updated_at=now,
    )
    seal_client_secret(keyring, client, body.client_secret)
    session.add(client)
    await session.flush()
    return client


async def get_client(
    session: AsyncSession, principal: Principal, client_pk: str, tenant_id: str | None
) -> OAuthClient:
    """The client if the caller may see it; another tenant's client is 'not found'."""
    if tenant_id:
        principal.require_tenant(tenant_id)
    client = await repository.get_client(session, client_pk)
    if (
        client is None
        or not principal.can_access(client.tenant_id)
        or (tenant_id and client.tenant_id != tenant_id)
    ):
        raise ClientNotFound(f"no client '{client_pk[:64]}'")
    return client


async def list_clients(
    session: AsyncSession, tenant_id: str, provider: str | None = None
) -> list[OAuthClient]:
    return await repository.list_clients(session, tenant_id, provider)


async def update_client(
    session: AsyncSession, ctx: TokenContext, client: OAuthClient, body: ClientUpdate
) -> OAuthClient:
    keyring, registry, settings = ctx.keyring, ctx.registry, ctx.settings
    changes = body.model_dump(exclude_unset=True)
    custom = {k: v for k, v in changes.items() if k in CUSTOM_FIELDS}
    custom_fields = _custom_settings_for(registry, client.provider, custom, creating=False)
    if custom_fields:
        merged = {**client.provider_settings, **custom_fields}
        merged = {k: v for k, v in merged.items() if v is not None}
        for required in ("authorization_url", "token_url"):
            if not merged.get(required):
                raise InvalidInput(f"{required}: required for a custom provider")
        await _check_custom(settings, client.provider, merged)
        client.provider_settings = merged
        await _reschedule_connections(session, ctx, client)
        # Its provider options (refresh margin, URLs) shape every cached read of its connections.
        after_commit(session, partial(ctx.invalidate, tenant_id=client.tenant_id))
    for name in ("name", "client_id", "redirect_uri", "scopes", "return_urls", "workspace_info"):
        if name in changes:
            if changes[name] is None and name != "workspace_info":
                raise InvalidInput(f"{name}: may not be null")
            setattr(client, name, changes[name])
    if changes.get("client_secret") is not None:
        seal_client_secret(keyring, client, changes["client_secret"])
    elif "client_secret" in changes:
        raise InvalidInput("client_secret: may not be null")
    client.updated_at = utcnow()
    await session.flush()
    return client


async def _reschedule_connections(
    session: AsyncSession, ctx: TokenContext, client: OAuthClient
) -> None:
    """The client's provider options changed (its refresh margin may have): move the monitoring
    loop's next refresh of each of its connections accordingly."""
    spec = ctx.spec_for(client)
    # SKIP LOCKED: a connection being refreshed right now (its row lock held through the provider
    # call) is rescheduled by that refresh's own write; waiting for it could take HTTP_TIMEOUT_S,
    # and writing over it would lose the refresh's new due time.
    connections = await session.scalars(
        select(OAuthConnection)
        .where(OAuthConnection.client_id == client.id)
        .with_for_update(skip_locked=True)
    )
    for connection in connections:
        connection.refresh_due_at = compute_refresh_due_at(connection, spec, ctx.settings)


async def delete_client(session: AsyncSession, ctx: TokenContext, client: OAuthClient) -> None:
    """Remove the client with its connections and pending logins (ON DELETE CASCADE)."""
    await session.execute(delete(OAuthConnection).where(OAuthConnection.client_id == client.id))
    await session.execute(delete(OAuthState).where(OAuthState.client_id == client.id))
    await session.delete(client)
    await session.flush()
    after_commit(session, partial(ctx.invalidate, tenant_id=client.tenant_id))


# --- login and callback ---------------------------------------------------------------------


def _return_url_allowed(return_url: str, allowlist: list[str]) -> bool:
    """Same scheme, host, port and path as an allowlisted URL; the query may differ."""
    try:
        wanted = urlsplit(return_url)
    except ValueError:
        return False
    for allowed_url in allowlist:
        allowed = urlsplit(allowed_url)
        if (
            wanted.scheme == allowed.scheme
            and wanted.netloc.lower() == allowed.netloc.lower()
            and (wanted.path or "/") == (allowed.path or "/")
            and not wanted.fragment
        ):
            return True
    return False


async def start_login(
    session: AsyncSession,
    ctx: TokenContext,
    client: OAuthClient,
    *,
    branch_id: str,
    return_url: str | None,
) -> LoginStart:
    if return_url is not None and not _return_url_allowed(return_url, client.return_urls):
        raise InvalidInput(
            "return_url: not in this client's allowed return URLs",
            code="return_url_not_allowed",
        )
    spec = ctx.spec_for(client)
    now = utcnow()
    await repository.delete_expired_states(session, now)
    state = oauth.new_state()
    verifier = oauth.new_code_verifier() if spec.pkce else None
    expires_at = now + timedelta(seconds=ctx.settings.oauth_state_ttl_s)
    row = OAuthState(
        id=oauth.state_key(state),
        tenant_id=client.tenant_id,
        client_id=client.id,
        branch_id=branch_id,
        return_url=return_url,
        redirect_uri=client.redirect_uri,
        expires_at=expires_at,
        created_at=now,
    )
    if verifier is not None:
        seal_code_verifier(ctx.keyring, row, verifier)
    session.add(row)
    await session.flush()
    url = oauth.authorization_url(
        spec,
        client_id=client.client_id,
        redirect_uri=client.redirect_uri,
        scopes=list(client.scopes or spec.default_scopes),
        state=state,
        challenge=oauth.code_challenge(verifier) if verifier else None,
    )
    return LoginStart(authorization_url=url, state=state, expires_at=expires_at)


async def complete_callback(
    ctx: TokenContext, *, state: str | None, code: str | None, error: str | None
) -> CallbackResult:
    """Consume the state, exchange the code, store the tokens.

    Runs in short transactions of its own: the state is consumed and committed before the
    provider is called (a code is single-use anyway), and no transaction stays open across it.
    """
    if not state or len(state) > 512:
        raise InvalidState("state is missing or malformed")
    now = utcnow()
    async with ctx.sessionmaker() as session, session.begin():
        pending = await repository.consume_state(session, oauth.state_key(state))
        client = await repository.get_client(session, pending.client_id) if pending else None
    if pending is None or client is None:
        raise InvalidState("unknown or already used state; start the login again")
    if pending.expires_at <= now:
        raise InvalidState("the login expired; start it again", code="state_expired")

    def failed(reason: str) -> CallbackResult:
        return CallbackResult(
            connected=False,
            provider=client.provider,
            branch_id=pending.branch_id,
            return_url=pending.return_url,
            reason=reason,
        )

    if error is not None:
        return failed(error if _OAUTH_ERROR.match(error) else "authorization_error")
    if not code or len(code) > 4096:
        return failed("missing_code")
    spec = ctx.spec_for(client)
    try:
        credentials = oauth.ClientCredentials(
            client.client_id, open_client_secret(ctx.keyring, client)
        )
        verifier = open_code_verifier(ctx.keyring, pending)
    except DecryptionError:
        logger.error("client %s secrets do not decrypt", client.id)
        return failed("undecryptable")
    try:
        tokens = await oauth.exchange_code(
            ctx.http,
            spec,
            credentials,
            code=code,
            redirect_uri=pending.redirect_uri,
            code_verifier=verifier,
            allow_private=ctx.settings.is_dev,
        )
    except ProviderError as exc:
        logger.warning("code exchange failed: provider=%s reason=%s", client.provider, exc.code)
        return failed(exc.code)
    connection = await _store_login(ctx, client, spec, pending.branch_id, tokens)
    await ctx.invalidate([connection.id])
    return CallbackResult(
        connected=True,
        provider=client.provider,
        branch_id=pending.branch_id,
        return_url=pending.return_url,
        expires_at=connection.expires_at,
    )


async def _store_login(
    ctx: TokenContext,
    client: OAuthClient,
    spec: ProviderSpec,
    branch_id: str,
    tokens: oauth.TokenSet,
) -> OAuthConnection:
    for attempt in range(2):
        try:
            async with ctx.sessionmaker() as session, session.begin():
                connection = await repository.find_connection(
                    session, client.tenant_id, client.provider, branch_id
                )
                now = utcnow()
                previous: str | None = None
                if connection is None:
                    connection = OAuthConnection(
                        id=new_id(),
                        tenant_id=client.tenant_id,
                        provider=client.provider,
                        branch_id=branch_id,
                        status=STATUS_ACTIVE,
                        failure_count=0,
                        created_at=now,
                    )
                    session.add(connection)
                else:
                    previous = connection.status
                connection.client_id = client.id
                apply_token_set(ctx, connection, spec, tokens, now)
                await session.flush()
                if previous is not None:
                    await notify_status_change(ctx, session, connection, previous, "reauthorized")
                return connection
        except IntegrityError:
            # Two logins for the same branch raced to insert; the second updates the first's row.
            if attempt:
                raise
    raise AssertionError("unreachable")


# --- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TokenRow:
    """What a token read needs of a connection; plain data, read in one query."""

    id: str
    tenant_id: str
    provider: str
    branch_id: str
    access_token_enc: str
    token_type: str
    scope: str | None
    expires_at: datetime | None
    status: str
    last_error: str | None
    last_used_at: datetime | None
    next_attempt_at: datetime | None
    spec: ProviderSpec


async def _load_for_tenant(
    ctx: TokenContext, tenant_id: str, provider: str, branch_id: str
) -> _TokenRow:
    async with ctx.engine.connect() as conn:
        row = await repository.read_token_row(conn, tenant_id, provider, branch_id)
    if row is None:
        raise ConnectionNotFound(f"no connection for provider '{provider}' and this branch_id")
    values = row._asdict()
    provider_settings = values.pop("provider_settings") or {}
    return _TokenRow(**values, spec=ctx.registry.resolve(row.provider, provider_settings))


def _needs_refresh(connection: _TokenRow, now: datetime) -> bool:
    if connection.expires_at is None:
        return False
    return connection.spec.refresh_from(connection.expires_at) <= now


def _raise_needs_reauth(connection: _TokenRow) -> None:
    raise NeedsReauth(
        f"the {connection.provider} grant for this branch_id is no longer valid "
        f"({connection.last_error or 'revoked'}); log in again",
        reason=connection.last_error,
    )


def _open_view(ctx: TokenContext, connection: _TokenRow) -> TokenView:
    """The answer of a token read, with the access token decrypted for it."""
    try:
        access_token = open_stored_access_token(
            ctx.keyring, connection.tenant_id, connection.id, connection.access_token_enc
        )
    except DecryptionError as exc:
        logger.error("access token of connection %s does not decrypt", connection.id)
        raise Conflict(
            "the stored token cannot be decrypted; log in again", code="needs_reauth"
        ) from exc
    return TokenView(
        provider=connection.provider,
        branch_id=connection.branch_id,
        access_token=access_token,
        token_type=connection.token_type,
        expires_at=connection.expires_at,
        scope=connection.scope,
    )


async def _view(ctx: TokenContext, connection: _TokenRow) -> TokenView:
    view = _open_view(ctx, connection)
    await _touch(ctx, connection.id, connection.last_used_at)
    return view


async def _touch(ctx: TokenContext, connection_id: str, last_used_at: datetime | None) -> datetime:
    """Write last_used_at when the recorded one is over a minute old; the time now on record."""
    now = utcnow()
    if last_used_at is not None and last_used_at >= now - _LAST_USED_RESOLUTION:
        return last_used_at
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


def _serve_for_s(connection: _TokenRow, now: datetime) -> float:
    """How long a read may answer with this row without looking again: until its refresh is due."""
    if connection.expires_at is None:
        return float("inf")
    return (connection.spec.refresh_from(connection.expires_at) - now).total_seconds()


async def read_token(ctx: TokenContext, tenant_id: str, provider: str, branch_id: str) -> TokenView:
    """A usable access token, refreshed first when it expires within the provider's margin.

    A row read within the last `TOKEN_READ_CACHE_TTL_S` answers from process memory until its
    refresh is due (see `read_cache`). Otherwise it uses short sessions of its own rather than the
    request's: a reader waiting for another worker's refresh must not hold a pooled connection.
    """
    cache = ctx.read_cache
    key = (tenant_id, provider, branch_id)
    if cache is not None:
        entry = cache.get(key)
        if entry is not None:
            view = _open_view(ctx, entry.row)
            entry.last_used_at = await _touch(ctx, entry.row.id, entry.last_used_at)
            return view
    epoch = cache.epoch if cache is not None else 0
    connection = await _load_for_tenant(ctx, tenant_id, provider, branch_id)
    if connection.status == STATUS_NEEDS_REAUTH:
        _raise_needs_reauth(connection)
    now = utcnow()
    if not _needs_refresh(connection, now):
        view = _open_view(ctx, connection)
        last_used_at = await _touch(ctx, connection.id, connection.last_used_at)
        if cache is not None:
            cache.put(key, connection, epoch, _serve_for_s(connection, now), last_used_at)
        return view
    outcome = await refresh_connection(ctx, connection.id, trigger="read")
    connection = await _load_for_tenant(ctx, tenant_id, provider, branch_id)
    if connection.status == STATUS_NEEDS_REAUTH:
        _raise_needs_reauth(connection)
    if connection.expires_at is not None and connection.expires_at <= utcnow():
        if outcome.error == "refresh_in_progress":
            raise RefreshInProgress("another worker is refreshing this token; retry shortly")
        raise RefreshUnavailable(
            "the token has expired and the provider could not refresh it "
            f"({connection.last_error or 'unknown'}); retry after retry_at",
            reason=connection.last_error,
            retry_at=connection.next_attempt_at.isoformat() if connection.next_attempt_at else None,
        )
    # Still valid (maybe within the margin after a failed refresh): the old token serves.
    return await _view(ctx, connection)


async def force_refresh(
    ctx: TokenContext, tenant_id: str, provider: str, branch_id: str
) -> TokenView:
    connection = await _load_for_tenant(ctx, tenant_id, provider, branch_id)
    if connection.status == STATUS_NEEDS_REAUTH:
        _raise_needs_reauth(connection)
    outcome = await refresh_connection(ctx, connection.id, force=True, trigger="forced")
    connection = await _load_for_tenant(ctx, tenant_id, provider, branch_id)
    if outcome.result == RESULT_NEEDS_REAUTH:
        _raise_needs_reauth(connection)
    if outcome.result == RESULT_REFRESH_FAILED:
        raise UpstreamError(
            f"the provider did not refresh the token ({outcome.error})",
            code="refresh_failed",
            reason=outcome.error,
        )
    if outcome.result != RESULT_REFRESHED:
        if outcome.error == "no_refresh_token":
            raise Conflict(
                f"{provider} issued no refresh token for this connection",
                code="refresh_not_supported",
            )
        raise RefreshInProgress("another worker is refreshing this token; retry shortly")
    return await _view(ctx, connection)


async def disconnect(ctx: TokenContext, tenant_id: str, provider: str, branch_id: str) -> bool:
    """Revoke at the provider where it can, then delete; True when the provider revoked it."""
    found = await _load_for_tenant(ctx, tenant_id, provider, branch_id)
    revoked = False
    if found.spec.revoke_url is not None:
        async with ctx.sessionmaker() as session:
            connection = await repository.get_connection(session, found.id)
        if connection is not None:
            revoked = await _revoke(ctx, connection, found.spec)
    async with ctx.sessionmaker() as session, session.begin():
        await session.execute(delete(OAuthConnection).where(OAuthConnection.id == found.id))
    await ctx.invalidate([found.id])
    return revoked


async def _revoke(ctx: TokenContext, connection: OAuthConnection, spec: ProviderSpec) -> bool:
    async with ctx.sessionmaker() as session:
        client = await repository.get_client(session, connection.client_id)
    if client is None:
        return False
    try:
        refresh_token = open_refresh_token(ctx.keyring, connection)
        token, hint = (
            (refresh_token, "refresh_token")
            if refresh_token
            else (open_access_token(ctx.keyring, connection), "access_token")
        )
        credentials = oauth.ClientCredentials(
            client.client_id, open_client_secret(ctx.keyring, client)
        )
        await oauth.revoke_token(
            ctx.http,
            spec,
            credentials,
            token=token,
            token_type_hint=hint,
            allow_private=ctx.settings.is_dev,
        )
    except DecryptionError:
        return False
    except ProviderError as exc:
        # The local copy is deleted regardless; the grant may outlive it at the provider.
        logger.warning("revocation failed: provider=%s reason=%s", connection.provider, exc.code)
        return False
    return True

"""The OAuth login: start it (state, PKCE, authorization URL), complete it at the callback."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import maintenance
from app.core.crypto import DecryptionError
from app.core.db import new_id, utcnow
from app.tokens import clients, oauth, repository
from app.tokens.context import NOTICE_CONNECTED, TokenContext
from app.tokens.exceptions import InvalidState, ProviderError, ReturnUrlNotAllowed, StateExpired
from app.tokens.models import STATUS_ACTIVE, OAuthClient, OAuthConnection, OAuthState
from app.tokens.providers import ProviderSpec
from app.tokens.refresh_writes import apply_token_set
from app.tokens.sealing import open_client_secret, open_code_verifier, seal_code_verifier

logger = logging.getLogger("junction.tokens")

# What of a provider's `error=` we pass on to the return URL: an OAuth error code, nothing else.
# Matched whole (`fullmatch`): `$` also matches before a trailing newline.
_OAUTH_ERROR = re.compile(r"[a-z_]{1,64}")


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
        raise ReturnUrlNotAllowed()
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
    # Before the state is consumed and the code exchanged: a login cannot be stored now.
    maintenance.refuse_writes(ctx.settings)
    now = utcnow()
    async with ctx.sessionmaker() as session, session.begin():
        pending = await repository.consume_state(session, oauth.state_key(state))
        client = await repository.get_client(session, pending.client_id) if pending else None
    if pending is None or client is None:
        raise InvalidState("unknown or already used state; start the login again")
    if pending.expires_at <= now:
        raise StateExpired("the login expired; start it again")

    def failed(reason: str) -> CallbackResult:
        return CallbackResult(
            connected=False,
            provider=client.provider,
            branch_id=pending.branch_id,
            return_url=pending.return_url,
            reason=reason,
        )

    if error is not None:
        return failed(error if _OAUTH_ERROR.fullmatch(error) else "authorization_error")
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
    ctx.refresh_scheduled(connection.refresh_due_at)
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
    """Store a login's grant: a new connection, or the branch's existing one re-authorized in
    place (same id, so its events and history stay), whatever its status was. `connected` is
    raised in the same transaction (reason `new` or `reauthorized`), and `recovered` as well when
    the connection had failed (see docs/monitoring.md)."""
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
                # A new grant: whatever was known of the old refresh token's expiry goes.
                connection.refresh_token_expires_at = None
                connection.refresh_token_warned_at = None
                apply_token_set(ctx, connection, spec, tokens, now)
                await session.flush()
                prepared = await ctx.prepare_status_change(session, client.tenant_id)
                if previous is not None:
                    prepared.record(session, connection, previous, "reauthorized")
                prepared.notify(
                    session,
                    NOTICE_CONNECTED,
                    connection,
                    "new" if previous is None else "reauthorized",
                )
                # The code exchange just succeeded with the client's credentials: a client
                # marked misconfigured works again.
                await _recover_client(session, ctx, client.id)
                return connection
        except IntegrityError:
            # Two logins for the same branch raced to insert; the second updates the first's row.
            if attempt:
                raise
    raise AssertionError("unreachable")


async def _recover_client(session: AsyncSession, ctx: TokenContext, client_pk: str) -> None:
    stored = await repository.get_client(session, client_pk)
    if stored is not None:
        await clients.recover(session, ctx, stored, "login")

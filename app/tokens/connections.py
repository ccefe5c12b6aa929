"""Disconnecting a branch: revoke its grant at the provider where it can, then delete it."""

from __future__ import annotations

import logging

from sqlalchemy import delete

from app.core.crypto import DecryptionError
from app.core.db import utcnow
from app.tokens import oauth, repository
from app.tokens.context import NOTICE_DISCONNECTED, ConnectionNotice, TokenContext
from app.tokens.exceptions import ProviderError
from app.tokens.models import OAuthConnection
from app.tokens.providers import ProviderSpec
from app.tokens.reads import find_token_row
from app.tokens.sealing import open_access_token, open_client_secret, open_refresh_token

logger = logging.getLogger("junction.tokens")


async def disconnect(ctx: TokenContext, tenant_id: str, provider: str, branch_id: str) -> bool:
    """Revoke at the provider where it can, then delete; True when the provider revoked it."""
    found = await find_token_row(ctx, tenant_id, provider, branch_id)
    revoked = False
    if found.spec.revoke_url is not None:
        async with ctx.sessionmaker() as session:
            connection = await repository.get_connection(session, found.id)
        if connection is not None:
            revoked = await _revoke(ctx, connection, found.spec)
    async with ctx.sessionmaker() as session, session.begin():
        deleted = await session.execute(
            delete(OAuthConnection).where(OAuthConnection.id == found.id)
        )
        if deleted.rowcount:  # type: ignore[attr-defined]
            # In the transaction of the delete; not when a concurrent disconnect deleted it.
            prepared = await ctx.prepare_status_change(session, tenant_id)
            prepared.emit(
                session,
                ConnectionNotice(
                    kind=NOTICE_DISCONNECTED,
                    tenant_id=found.tenant_id,
                    provider=found.provider,
                    branch_id=found.branch_id,
                    connection_id=found.id,
                    reason="revoked" if revoked else "deleted",
                    occurred_at=utcnow(),
                ),
            )
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

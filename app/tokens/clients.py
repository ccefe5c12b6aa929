"""OAuth clients: a tenant's registered app credentials per provider, and their custom providers."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import netguard
from app.core.auth import Principal
from app.core.config import Settings
from app.core.db import after_commit, new_id, utcnow
from app.core.errors import InvalidField, InvalidInput
from app.tokens import repository, timing
from app.tokens.context import ClientStatusChange, TokenContext
from app.tokens.exceptions import ClientNotFound, UnsafeDestination
from app.tokens.models import (
    CLIENT_ACTIVE,
    CLIENT_MISCONFIGURED,
    OAuthClient,
    OAuthConnection,
    OAuthState,
)
from app.tokens.providers import CUSTOM_FIELDS, URL_FIELDS, ProviderRegistry, custom_spec
from app.tokens.schemas import ClientCreate, ClientUpdate
from app.tokens.sealing import seal_client_secret
from app.workspaces.service import ensure_workspace

# The custom provider URLs Junction itself calls (with the client secret and tokens).
SERVER_CALLED_URL_FIELDS = ("token_url", "refresh_url", "revoke_url")


def _custom_settings_for(
    registry: ProviderRegistry, provider: str, fields: dict[str, Any], *, creating: bool
) -> dict[str, Any]:
    if registry.is_builtin(provider):
        if fields:
            name = sorted(fields)[0]
            raise InvalidField(
                name,
                "only for custom providers",
                detail=f"{name}: only a custom provider takes its own URLs and options; "
                f"'{provider}' is built in (its URLs are overridden in settings)",
            )
        return {}
    if creating:
        for required in ("authorization_url", "token_url"):
            if not fields.get(required):
                raise InvalidField(
                    required,
                    "required for a custom provider",
                    detail=f"{required}: required for the custom provider '{provider}'",
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
            raise InvalidField(
                name,
                "must be an https URL",
                detail=f"{name}: must be an https URL (http to localhost only in development)",
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
            raise UnsafeDestination(
                name, "must resolve to a public address", detail=f"{name}: {exc}"
            ) from None


async def create_client(
    session: AsyncSession, ctx: TokenContext, tenant_id: str, body: ClientCreate
) -> OAuthClient:
    provider_settings = _custom_settings_for(
        ctx.registry, body.provider, body.custom_settings(), creating=True
    )
    if provider_settings:
        await _check_custom(ctx.settings, body.provider, provider_settings)
    redirect_uri = body.redirect_uri or ctx.settings.oauth_callback_url
    if not redirect_uri:
        raise InvalidField(
            "redirect_uri",
            "required",
            detail="redirect_uri: required (no OAUTH_CALLBACK_URL is configured)",
        )
    spec = ctx.registry.resolve(body.provider, provider_settings)
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
    seal_client_secret(ctx.keyring, client, body.client_secret)
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
    changes = body.model_dump(exclude_unset=True)
    custom = {k: v for k, v in changes.items() if k in CUSTOM_FIELDS}
    custom_fields = _custom_settings_for(ctx.registry, client.provider, custom, creating=False)
    if custom_fields:
        merged = {**client.provider_settings, **custom_fields}
        merged = {k: v for k, v in merged.items() if v is not None}
        for required in ("authorization_url", "token_url"):
            if not merged.get(required):
                raise InvalidInput(f"{required}: required for a custom provider")
        await _check_custom(ctx.settings, client.provider, merged)
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
        seal_client_secret(ctx.keyring, client, changes["client_secret"])
    elif "client_secret" in changes:
        raise InvalidInput("client_secret: may not be null")
    client.updated_at = utcnow()
    # An edit is the fix a misconfigured client waits for: its connections are refreshed again
    # (and should the provider still refuse it, it is marked again, with a new event).
    await recover(session, ctx, client, "edited")
    await session.flush()
    return client


# --- status: misconfigured and back --------------------------------------------------------


async def mark_misconfigured(
    session: AsyncSession,
    client_pk: str,
    reason: str,
    now: datetime,
    *,
    read_at_version: datetime | None = None,
) -> bool:
    """Mark the client misconfigured unless it already is; True when this call changed it.

    One conditional UPDATE: of many refreshes refused at once, exactly one wins (on PostgreSQL
    the others wait for its row lock, then find the status changed), so one event is raised.
    `read_at_version`: the `updated_at` of the client the refused call was made with; an edit
    since (perhaps the fix) is not overruled by a refusal of the credentials it replaced.
    """
    unchanged = () if read_at_version is None else (OAuthClient.updated_at == read_at_version,)
    statement = (
        update(OAuthClient)
        .where(OAuthClient.id == client_pk, OAuthClient.status == CLIENT_ACTIVE, *unchanged)
        .values(status=CLIENT_MISCONFIGURED, status_reason=reason[:255], status_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool((await session.execute(statement)).rowcount)  # type: ignore[attr-defined]


async def recover(
    session: AsyncSession, ctx: TokenContext, client: OAuthClient, reason: str
) -> bool:
    """Make a misconfigured client active again, in the caller's transaction: a `recovered`
    event for it, and its connections due at once (the monitoring loop left them alone while it
    was misconfigured). False when it was not misconfigured."""
    if client.status != CLIENT_MISCONFIGURED:
        return False
    now = utcnow()
    previous_reason = client.status_reason
    client.status = CLIENT_ACTIVE
    client.status_reason = None
    client.status_changed_at = now
    await _reschedule_connections(session, ctx, client)
    prepared = await ctx.prepare_status_change(session, client.tenant_id)
    prepared.emit(
        session,
        ClientStatusChange(
            tenant_id=client.tenant_id,
            provider=client.provider,
            client_id=client.id,
            previous_status=CLIENT_MISCONFIGURED,
            new_status=CLIENT_ACTIVE,
            reason=f"{reason} (was {previous_reason})" if previous_reason else reason,
            occurred_at=now,
        ),
    )
    return True


async def _reschedule_connections(
    session: AsyncSession, ctx: TokenContext, client: OAuthClient
) -> None:
    """The client's provider options changed (its refresh margin may have): move the monitoring
    loop's next refresh of each of its connections accordingly."""
    spec = ctx.spec_for(client)
    # SKIP LOCKED: a connection a read is refreshing right now (its row lock held through the
    # provider call) is rescheduled by that refresh's own write; waiting for it could take
    # HTTP_TIMEOUT_S. (One the loop refreshes under its lease alone is rescheduled here, and
    # then by that refresh's write, as a locked one would be.)
    connections = await session.scalars(
        select(OAuthConnection)
        .where(OAuthConnection.client_id == client.id)
        .with_for_update(skip_locked=True)
    )
    for connection in connections:
        connection.refresh_due_at = timing.compute_refresh_due_at(connection, spec, ctx.settings)


async def delete_client(session: AsyncSession, ctx: TokenContext, client: OAuthClient) -> None:
    """Remove the client with its connections and pending logins (ON DELETE CASCADE)."""
    await session.execute(delete(OAuthConnection).where(OAuthConnection.client_id == client.id))
    await session.execute(delete(OAuthState).where(OAuthState.client_id == client.id))
    await session.delete(client)
    await session.flush()
    after_commit(session, partial(ctx.invalidate, tenant_id=client.tenant_id))

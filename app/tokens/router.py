"""HTTP routes of the tokens domain (the review-fetcher's /token-management/... routes, kept)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from app.core import openapi
from app.core.db import utcnow
from app.core.deps import (
    TENANT_ID_PATTERN,
    CurrentPrincipal,
    SessionDep,
    get_principal,
)
from app.core.errors import error_body
from app.core.hot_path import PreparedResponse
from app.core.pagination import PageCursor, PageLimit
from app.core.routing import DirectRoute, PathParam, QueryParam, direct_parameters
from app.core.schemas import ErrorResponse
from app.state import app_state
from app.tokens import clients, connections, login, reads, timing
from app.tokens.context import TokenContext
from app.tokens.oauth import with_query
from app.tokens.schemas import (
    BRANCH_ID_PATTERN,
    CLIENT_ID_PATTERN,
    PROVIDER_PATTERN,
    CallbackOut,
    ClientCreate,
    ClientList,
    ClientOut,
    ClientUpdate,
    ConnectionOut,
    ConnectionPage,
    DisconnectOut,
    LoginOut,
    ProviderList,
    ProviderOut,
    RefreshRequest,
    TokenOut,
)

router = APIRouter(prefix="/token-management", tags=["tokens"])


async def get_token_context(request: Request) -> TokenContext:
    return app_state(request.app).tokens


TokenContextDep = Annotated[TokenContext, Depends(get_token_context)]
TenantQuery = Annotated[
    str | None,
    Query(pattern=TENANT_ID_PATTERN, description="the tenant; default: the token's only tenant"),
]
_PROVIDER_DESCRIPTION = "the provider's slug, as in /token-management/providers: `google`, `wix` …"
_BRANCH_DESCRIPTION = (
    "the caller's own key for whom the connection is made: a user, a branch, a site"
)
ProviderQuery = Annotated[str, Query(pattern=PROVIDER_PATTERN, description=_PROVIDER_DESCRIPTION)]
OptionalProviderQuery = Annotated[
    str | None, Query(pattern=PROVIDER_PATTERN, description="only this provider's")
]
BranchPath = Annotated[str, Path(pattern=BRANCH_ID_PATTERN, description=_BRANCH_DESCRIPTION)]
ClientPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=CLIENT_ID_PATTERN,
        description="Junction's id of the registered client",
    ),
]

# The browser lands on the callback with a code and state in its URL: the answer must not be
# cached and the next page must not see it in a Referer.
_CALLBACK_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


# A token answer is never to be cached by anyone on its way (it carries the access token).
_TOKEN_HEADERS = ((b"content-type", b"application/json"), (b"cache-control", b"no-store"))


def _token_out(view: reads.TokenView) -> Response:
    body = view.json()
    headers = (*_TOKEN_HEADERS, (b"content-length", str(len(body)).encode()))
    return PreparedResponse(200, body, headers)


# Declared once: each reads its parameter on the hot path and documents it in OpenAPI.
_BRANCH_ID = PathParam("branch_id", BRANCH_ID_PATTERN, description=_BRANCH_DESCRIPTION)
_PROVIDER = QueryParam(
    "provider", PROVIDER_PATTERN, required=True, description=_PROVIDER_DESCRIPTION
)
_TENANT_ID = QueryParam(
    "tenant_id", TENANT_ID_PATTERN, description="the tenant; default: the token's only tenant"
)


async def read_token(request: Request) -> Response:
    """A usable access token for the branch, refreshed first when it is about to expire
    (its effective margin: docs/tokens.md). Never the refresh token.
    \f
    The hot read of this domain, on a `DirectRoute` (see `add_hot_routes`): it reads its own path,
    query and caller, and a fresh token answers from the read cache without a database query.
    """
    principal = await get_principal(request)
    branch_id = _BRANCH_ID.read(request)
    provider = _PROVIDER.read(request)
    assert provider is not None
    tenant = principal.resolve_tenant(_TENANT_ID.read(request))
    ctx = app_state(request.app).tokens
    return _token_out(await reads.read_token(ctx, tenant, provider, branch_id))


def add_hot_routes(app: FastAPI) -> None:
    """GET /token-management/tokens/{branch_id}, on the app itself, ahead of every included
    router (each route tried before the matching one costs ~1.5 µs)."""
    app.router.add_api_route(
        f"{router.prefix}/tokens/{{branch_id}}",
        read_token,
        summary="Read a fresh access token",
        methods=["GET"],
        tags=["tokens"],
        response_model=TokenOut,
        responses={code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422, 503)},
        openapi_extra=direct_parameters(_BRANCH_ID, _PROVIDER, _TENANT_ID),
        route_class_override=DirectRoute,
    )


@router.get("/providers", summary="List OAuth providers", response_model=ProviderList)
async def list_providers(principal: CurrentPrincipal, ctx: TokenContextDep) -> ProviderList:
    """The built-in providers and their capabilities (URLs after overrides, PKCE, body
    format, client authentication, refresh margin, whether tokens expire).
    """
    providers = [ProviderOut(**spec.capabilities()) for spec in ctx.registry.all_builtin()]
    return ProviderList(providers=providers)


@router.post(
    "/clients", summary="Register an OAuth client", response_model=ClientOut, status_code=201
)
async def create_client(
    body: ClientCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    ctx: TokenContextDep,
) -> Any:
    """Register a tenant's OAuth app for a provider (built-in, or custom with its own URLs).

    The secret is stored encrypted and never returned (`has_client_secret: true`).
    """
    tenant_id = principal.resolve_tenant(body.tenant_id)
    return await clients.create_client(session, ctx, tenant_id, body)


@router.get("/clients", summary="List OAuth clients", response_model=ClientList)
async def list_clients(
    principal: CurrentPrincipal,
    session: SessionDep,
    tenant_id: TenantQuery = None,
    provider: OptionalProviderQuery = None,
) -> Any:
    """The tenant's registered clients, optionally of one provider."""
    tenant = principal.resolve_tenant(tenant_id)
    found = await clients.list_clients(session, tenant, provider)
    return ClientList(items=[ClientOut.model_validate(client) for client in found])


@router.get(
    "/clients/{client_id}",
    summary="Read an OAuth client",
    response_model=ClientOut,
    responses=openapi.errors(404),
)
async def read_client(
    client_id: ClientPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    tenant_id: TenantQuery = None,
) -> Any:
    """One registered client (`client_id` is Junction's `id` of it)."""
    return await clients.get_client(session, principal, client_id, tenant_id)


@router.patch(
    "/clients/{client_id}",
    summary="Edit an OAuth client",
    response_model=ClientOut,
    responses=openapi.errors(404),
)
async def update_client(
    client_id: ClientPath,
    body: ClientUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    ctx: TokenContextDep,
    tenant_id: TenantQuery = None,
) -> Any:
    """Edit a client: only the fields sent change; a new `client_secret` replaces the old."""
    client = await clients.get_client(session, principal, client_id, tenant_id)
    return await clients.update_client(session, ctx, client, body)


@router.delete(
    "/clients/{client_id}",
    summary="Delete an OAuth client",
    status_code=204,
    responses=openapi.errors(404),
)
async def delete_client(
    client_id: ClientPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    ctx: TokenContextDep,
    tenant_id: TenantQuery = None,
) -> Response:
    """Remove a client, with its connections and pending logins."""
    client = await clients.get_client(session, principal, client_id, tenant_id)
    await clients.delete_client(session, ctx, client)
    return Response(status_code=204)


@router.get(
    "/oauth/login/{client_id}",
    summary="Start an OAuth login",
    response_model=LoginOut,
    responses=openapi.errors(404),
)
async def start_login(
    client_id: ClientPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    ctx: TokenContextDep,
    branch_id: Annotated[str, Query(pattern=BRANCH_ID_PATTERN, description=_BRANCH_DESCRIPTION)],
    return_url: Annotated[
        str | None,
        Query(
            max_length=2048,
            description="where the browser goes after the callback; one of the client's "
            "return_urls (default: the first)",
        ),
    ] = None,
    redirect: Annotated[
        bool, Query(description="answer a 307 to the provider instead of the URL as JSON")
    ] = False,
    tenant_id: TenantQuery = None,
) -> Any:
    """Start an OAuth login for a branch: the provider's authorization URL to send the
    browser to (or a 307 there with `redirect=true`), and the single-use `state`, valid for
    10 minutes.
    """
    client = await clients.get_client(session, principal, client_id, tenant_id)
    started = await login.start_login(
        session, ctx, client, branch_id=branch_id, return_url=return_url
    )
    if redirect:
        return RedirectResponse(started.authorization_url, status_code=307)
    return LoginOut(
        authorization_url=started.authorization_url,
        state=started.state,
        expires_at=started.expires_at,
    )


@router.get(
    "/auth/callback",
    summary="Complete an OAuth login",
    response_model=CallbackOut,
    responses={
        303: {"description": "back to the return URL with status=connected|error"},
        **openapi.errors(400, 502),
    },
)
async def auth_callback(
    ctx: TokenContextDep,
    state: Annotated[
        str,
        Query(
            min_length=1,
            max_length=512,
            description="the login's single-use state, as the provider sends it back",
        ),
    ],
    code: Annotated[
        str | None,
        Query(max_length=4096, description="the authorization code, on success"),
    ] = None,
    error: Annotated[
        str | None,
        Query(max_length=256, description="the provider's OAuth error code, on refusal"),
    ] = None,
) -> Response:
    """The provider's redirect: no bearer token; the state says whose login this is."""
    result = await login.complete_callback(ctx, state=state, code=code, error=error)
    if result.return_url:
        params = {"status": "connected" if result.connected else "error"}
        if result.reason:
            params["reason"] = result.reason
        params.update(provider=result.provider, branch_id=result.branch_id)
        return RedirectResponse(
            with_query(result.return_url, params), status_code=303, headers=_CALLBACK_HEADERS
        )
    if result.connected:
        body = CallbackOut(
            status="connected",
            provider=result.provider,
            branch_id=result.branch_id,
            expires_at=result.expires_at,
        )
        return JSONResponse(body.model_dump(mode="json"), headers=_CALLBACK_HEADERS)
    denied = result.reason in {"access_denied", "missing_code"} or result.reason is None
    code_name = "authorization_denied" if denied else "token_exchange_failed"
    return JSONResponse(
        error_body(
            code_name,
            f"the login did not complete ({result.reason})",
            reason=result.reason,
            provider=result.provider,
            branch_id=result.branch_id,
        ),
        status_code=400 if denied else 502,
        headers=_CALLBACK_HEADERS,
    )


StatusQuery = Annotated[
    Literal[timing.CONNECTION_STATUSES] | None,  # type: ignore[valid-type]
    Query(description="only connections in this status"),
]


@router.get("/connections", summary="List connections", response_model=ConnectionPage)
async def list_connections(
    principal: CurrentPrincipal,
    session: SessionDep,
    ctx: TokenContextDep,
    tenant_id: TenantQuery = None,
    provider: OptionalProviderQuery = None,
    status: StatusQuery = None,
    branch_id: Annotated[
        str | None, Query(pattern=BRANCH_ID_PATTERN, description="only this branch's")
    ] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> ConnectionPage:
    """The tenant's connections in (provider, branch_id) order, with status, expiry, last
    refresh and last error, and the counts per status of all that match provider and branch_id.
    No token or secret is shown."""
    wanted = connections.ConnectionFilter(
        principal.resolve_tenant(tenant_id), provider, branch_id, status
    )
    listing = await connections.list_connections(
        session, ctx.registry, wanted, now=utcnow(), limit=limit, cursor=cursor
    )
    items = [
        ConnectionOut(
            id=row.OAuthConnection.id,
            provider=row.OAuthConnection.provider,
            branch_id=row.OAuthConnection.branch_id,
            client_id=row.OAuthConnection.client_id,
            status=row.reported_status,
            client_status=row.client_status,
            expires_at=row.OAuthConnection.expires_at,
            last_refreshed_at=row.OAuthConnection.last_refreshed_at,
            last_error=row.OAuthConnection.last_error,
            next_attempt_at=row.OAuthConnection.next_attempt_at,
            refresh_token_expires_at=row.OAuthConnection.refresh_token_expires_at,
            created_at=row.OAuthConnection.created_at,
            updated_at=row.OAuthConnection.updated_at,
        )
        for row in listing.rows
    ]
    return ConnectionPage(
        items=items,
        next_cursor=listing.next_cursor,
        total=sum(listing.counts.values()),
        counts=listing.counts,
    )


@router.post(
    "/tokens/refresh",
    summary="Refresh a token now",
    response_model=TokenOut,
    responses=openapi.errors(404, 409),
)
async def refresh_token(
    body: RefreshRequest, principal: CurrentPrincipal, ctx: TokenContextDep
) -> Response:
    """Refresh one connection's token now, whatever its expiry, and answer the new token."""
    tenant = principal.resolve_tenant(body.tenant_id)
    return _token_out(await reads.force_refresh(ctx, tenant, body.provider, body.branch_id))


@router.delete(
    "/tokens/{branch_id}",
    summary="Disconnect a branch",
    response_model=DisconnectOut,
    responses=openapi.errors(404),
)
async def disconnect(
    branch_id: BranchPath,
    provider: ProviderQuery,
    principal: CurrentPrincipal,
    ctx: TokenContextDep,
    tenant_id: TenantQuery = None,
) -> DisconnectOut:
    """Disconnect a branch from a provider: revoke the grant at the provider where it can,
    then delete the connection.
    """
    tenant = principal.resolve_tenant(tenant_id)
    revoked = await connections.disconnect(ctx, tenant, provider, branch_id)
    return DisconnectOut(
        provider=provider, branch_id=branch_id, disconnected=True, revoked_at_provider=revoked
    )

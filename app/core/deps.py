"""`Annotated` dependency aliases, so route signatures read like sentences."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import permissions
from app.core.auth import Principal
from app.core.cache import Cache
from app.core.config import Settings
from app.core.crypto import Keyring
from app.core.db import unit_of_work
from app.core.errors import TokenRevoked, Unauthorized
from app.core.headers import request_header
from app.state import AppState, app_state


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(app_state(request.app).sessionmaker) as session:
        yield session


# The getters are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
# thread, a needless hop on every request.
async def get_settings(request: Request) -> Settings:
    return app_state(request.app).settings


async def get_cache(request: Request) -> Cache:
    return app_state(request.app).cache


async def get_keyring(request: Request) -> Keyring:
    return app_state(request.app).keyring


async def get_principal(request: Request) -> Principal:
    """The verified, unrevoked caller, allowed by the permission table to call this operation."""
    header = request_header(request.scope, b"authorization")
    if not header:
        raise Unauthorized("missing bearer token (Authorization: Bearer <JWT>)")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <JWT>'")
    state = app_state(request.app)
    # A token verified before needs no await: most requests of a caller after its first.
    known = state.token_verifier.verified_before(token)
    principal = (
        _unrevoked(state, known) if known is not None else await verified_caller(state, token)
    )
    permissions.rule_for(request).check(principal)
    return principal


async def verified_caller(state: AppState, token: str) -> Principal:
    """The bearer token's caller, verified and not revoked; which operations it may call is the
    permission table's to say (the API's routes and the console's sign-in both check it)."""
    return _unrevoked(state, await state.token_verifier.verify(token.strip()))


def _unrevoked(state: AppState, principal: Principal) -> Principal:
    if state.revocations.is_revoked(principal.jti):
        raise TokenRevoked("the token has been revoked")
    return principal


# scope="function": commit (and after-commit hooks such as cache invalidation) complete before the
# response is sent, so a caller that has the response can trust that the write is visible.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CacheDep = Annotated[Cache, Depends(get_cache)]
KeyringDep = Annotated[Keyring, Depends(get_keyring)]
# The caller, with the role and tenant scope the operation's entry in the permission table
# (app/core/permissions.py) asks for already checked.
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]

TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# An optional tenant id in a query: needed when the caller's token names several tenants.
TenantIdQuery = Annotated[
    str | None,
    Query(pattern=TENANT_ID_PATTERN, description="required when the token has several tenants"),
]
# A tenant id in a route path: 1-128 characters, letters, digits and . _ : -
TenantIdPath = Annotated[
    str, Path(pattern=TENANT_ID_PATTERN, description="the tenant (workspace) id")
]

"""HTTP routes of the provider_configs domain: /config/{tenant_id} and its history and rollback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from app.core.auth import ROLE_ADMIN, ROLE_SERVICE
from app.core.deps import CurrentPrincipal, SessionDep, TenantIdPath
from app.core.schemas import ErrorResponse
from app.provider_configs import service
from app.provider_configs.cache import ConfigCache
from app.provider_configs.schemas import (
    MAX_HISTORY_LIMIT,
    ConfigDocument,
    ConfigWrite,
    HistoryPage,
    ProviderType,
    RollbackRequest,
)

router = APIRouter(tags=["provider_configs"])

JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)
}
_DOCUMENT: dict[int | str, dict[str, Any]] = {200: {"model": ConfigDocument}, **_ERRORS}


def get_domain(request: Request) -> service.Domain:
    domain: service.Domain = request.app.state.provider_configs
    return domain


DomainDep = Annotated[service.Domain, Depends(get_domain)]


def _json(document: dict[str, Any], *, private: bool = False) -> Response:
    headers = {"Cache-Control": "no-store"} if private else None
    return Response(service.encode(document), media_type=JSON, headers=headers)


@router.get("/config/{tenant_id}", response_model=None, responses=_DOCUMENT)
async def get_config(
    request: Request,
    tenant_id: TenantIdPath,
    principal: CurrentPrincipal,
    provider_type: ProviderType | None = None,
    include_secrets: Annotated[
        bool, Query(description="reveal api_key/api_secret (service or admin role)")
    ] = False,
) -> Response:
    """The tenant's current configuration (defaults for types it stored nothing for)."""
    principal.require_tenant(tenant_id)
    if include_secrets:
        principal.require_role(ROLE_SERVICE, ROLE_ADMIN)
        domain = get_domain(request)
        async with domain.sessionmaker() as session:
            document = await service.read_document(
                session, domain.defaults, tenant_id, provider_type, keyring=domain.keyring
            )
        return _json(document, private=True)
    # Hot path: the cache holds the serialized body; a warm read touches no session or model.
    cache: ConfigCache = request.app.state.provider_configs.cache
    return Response(await cache.get(tenant_id, provider_type), media_type=JSON)


@router.post("/config/{tenant_id}", response_model=None, responses=_DOCUMENT)
async def write_config(
    tenant_id: TenantIdPath,
    body: ConfigWrite,
    principal: CurrentPrincipal,
    session: SessionDep,
    domain: DomainDep,
) -> Response:
    """Upsert the providers listed (others untouched); one version row per real change."""
    principal.require_tenant(tenant_id)
    document = await service.upsert_providers(
        session, domain, tenant_id, body, changed_by=principal.sub
    )
    return _json(document)


@router.delete("/config/{tenant_id}", response_model=None, responses=_DOCUMENT)
async def delete_config(
    tenant_id: TenantIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    domain: DomainDep,
    change_reason: Annotated[str, Query(min_length=1, max_length=1000)],
    provider_type: ProviderType | None = None,
    provider_name: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> Response:
    """Delete the matching configurations (all of the tenant's without filters)."""
    principal.require_tenant(tenant_id)
    document = await service.delete_configs(
        session,
        domain,
        tenant_id,
        provider_type=provider_type,
        provider_name=provider_name,
        reason=change_reason,
        changed_by=principal.sub,
    )
    return _json(document)


@router.get("/config/{tenant_id}/history", response_model=HistoryPage, responses=_ERRORS)
async def config_history(
    tenant_id: TenantIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    provider_type: ProviderType | None = None,
    provider_name: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    config_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, description=f"capped at {MAX_HISTORY_LIMIT}")] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Version rows, newest first, with secrets masked."""
    principal.require_tenant(tenant_id)
    page = await service.history(
        session,
        tenant_id,
        provider_type=provider_type,
        provider_name=provider_name,
        config_id=config_id,
        limit=min(limit, MAX_HISTORY_LIMIT),
        cursor=cursor,
    )
    return _json(page)


@router.post("/config/{tenant_id}/rollback", response_model=None, responses=_DOCUMENT)
async def rollback_config(
    tenant_id: TenantIdPath,
    body: RollbackRequest,
    principal: CurrentPrincipal,
    session: SessionDep,
    domain: DomainDep,
) -> Response:
    """Write an old version's content as a new version (`rolled_back`)."""
    principal.require_tenant(tenant_id)
    document = await service.rollback(session, domain, tenant_id, body, changed_by=principal.sub)
    return _json(document)

"""HTTP routes of the provider_configs domain: /config/{tenant_id} and its history and rollback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response

from app.core import openapi, permissions
from app.core.conditional import none_match
from app.core.deps import (
    TENANT_ID_PATTERN,
    CurrentPrincipal,
    SessionDep,
    TenantIdPath,
    get_principal,
)
from app.core.headers import request_header
from app.core.hot_path import PreparedResponse
from app.core.pagination import PageCursor
from app.core.routing import DirectRoute, PathParam, QueryFlag, QueryParam, direct_parameters
from app.core.schemas import ErrorResponse
from app.provider_configs import history, reads, service
from app.provider_configs.rendering import RenderedDocument
from app.provider_configs.schemas import (
    MAX_HISTORY_LIMIT,
    MAX_VERSION,
    NO_NUL_PATTERN,
    PROVIDER_TYPES,
    ConfigDiff,
    ConfigDocument,
    ConfigWrite,
    HistoryPage,
    ProviderType,
    RollbackPreview,
    RollbackRequest,
)
from app.state import app_state

router = APIRouter(tags=["configs"])

JSON = "application/json"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)
}
_DOCUMENT: dict[int | str, dict[str, Any]] = {200: {"model": ConfigDocument}, **ERRORS}
_WRITE: dict[int | str, dict[str, Any]] = {**_DOCUMENT, **openapi.errors(412)}


def _domain(request: Request) -> service.Domain:
    return app_state(request.app).provider_configs


async def get_domain(request: Request) -> service.Domain:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a needless hop per request.
    return _domain(request)


DomainDep = Annotated[service.Domain, Depends(get_domain)]


Caller = CurrentPrincipal


def _json(body: bytes, *, private: bool = False) -> Response:
    headers = {"Cache-Control": "no-store"} if private else None
    return Response(body, media_type=JSON, headers=headers)


ProviderTypeQuery = Annotated[ProviderType | None, Query(description="only this provider list")]
ProviderNameQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=100, pattern=NO_NUL_PATTERN, description="only this provider"),
]


def _document(document: RenderedDocument) -> Response:
    """A document with its entity tag (a revealed one has none and is never stored)."""
    if document.etag is None:
        return _json(document.body, private=True)
    return PreparedResponse(200, document.body, document.http_headers)


# A write's precondition: the tag of the document it was read from (GET's `ETag`).
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=2000,
        description="the `ETag` of the document (whole or one provider type) this write was "
        "based on: 412 if it changed since; an alternative to `expected_version`",
    ),
]
_IF_NONE_MATCH_NAME = b"if-none-match"
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "the `ETag` of the document the client holds: 304 with no body if unchanged",
}
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the document still has the `ETag` sent in If-None-Match"}
}


# Declared once: each reads its parameter on the hot path and documents it in OpenAPI.
_TENANT_ID = PathParam("tenant_id", TENANT_ID_PATTERN, description="the tenant (workspace) id")
_PROVIDER_TYPE = QueryParam(
    "provider_type", choices=PROVIDER_TYPES, description="only this provider list"
)
_INCLUDE_SECRETS = QueryFlag(
    "include_secrets", description="reveal api_key / api_secret (service or admin role)"
)


async def get_config(request: Request) -> Response:
    """The tenant's current configuration (defaults for types it stored nothing for).

    Secrets are masked unless `include_secrets=true` (which needs the `service` or `admin` role).
    The masked document carries a strong `ETag`; `If-None-Match` with it answers 304.
    \f
    The hot path of the service, on a `DirectRoute`: the path, the query and the caller are read
    here rather than declared, and the cache holds the serialized body and its tag, so a warm read
    (and its 304) touches no session, no model and no dependency solving.
    """
    principal = await get_principal(request)
    tenant_id = _TENANT_ID.read(request)
    principal.require_tenant(tenant_id)
    provider_type = _PROVIDER_TYPE.read(request)
    include_secrets = _INCLUDE_SECRETS.read(request)
    domain = _domain(request)
    if include_secrets:
        permissions.REVEAL_CONFIG_SECRETS.check(principal)
        async with domain.sessionmaker() as session:
            document = await reads.read_document(
                session, domain.defaults, tenant_id, provider_type, keyring=domain.keyring
            )
        return _document(document)
    document = await domain.cache.get(tenant_id, provider_type)
    etag = document.etag
    if etag is not None and none_match(request_header(request.scope, _IF_NONE_MATCH_NAME), etag):
        return PreparedResponse(304, b"", document.not_modified_headers)
    return _document(document)


def add_hot_routes(app: FastAPI) -> None:
    """GET /config/{tenant_id}, on the app itself: ahead of every included router, among the
    first routes Starlette tries (each route tried before the matching one costs ~1.5 µs)."""
    app.router.add_api_route(
        "/config/{tenant_id}",
        get_config,
        summary="Read the provider configurations",
        methods=["GET"],
        tags=["configs"],
        response_model=None,
        responses={**_DOCUMENT, **_NOT_MODIFIED},
        openapi_extra={
            "parameters": [
                *direct_parameters(_TENANT_ID, _PROVIDER_TYPE, _INCLUDE_SECRETS)["parameters"],
                _IF_NONE_MATCH,
            ]
        },
        route_class_override=DirectRoute,
    )


@router.post(
    "/config/{tenant_id}",
    summary="Write provider configurations",
    response_model=None,
    responses=_WRITE,
)
async def write_config(
    tenant_id: TenantIdPath,
    body: ConfigWrite,
    principal: Caller,
    session: SessionDep,
    domain: DomainDep,
    if_match: IfMatch = None,
) -> Response:
    """Upsert the providers listed (others untouched); one version row per real change.

    Answers the whole document with its `ETag`. `If-Match` makes the write conditional on the
    document (whole or of one type) it was read from: 412 if it changed since.
    """
    principal.require_tenant(tenant_id)
    document = await service.upsert_providers(
        session, domain, tenant_id, body, changed_by=principal.sub, if_match=if_match
    )
    return _document(document)


@router.delete(
    "/config/{tenant_id}",
    summary="Delete provider configurations",
    response_model=None,
    responses=_WRITE,
)
async def delete_config(
    tenant_id: TenantIdPath,
    principal: Caller,
    session: SessionDep,
    domain: DomainDep,
    change_reason: Annotated[
        str,
        Query(
            min_length=1,
            max_length=1000,
            pattern=NO_NUL_PATTERN,
            description="why: kept on the `deleted` version rows",
        ),
    ],
    provider_type: ProviderTypeQuery = None,
    provider_name: ProviderNameQuery = None,
    if_match: IfMatch = None,
) -> Response:
    """Delete the matching configurations (all of the tenant's without filters).

    `If-Match` makes the delete conditional, as for a POST (412).
    """
    principal.require_tenant(tenant_id)
    document = await service.delete_configs(
        session,
        domain,
        tenant_id,
        provider_type=provider_type,
        provider_name=provider_name,
        reason=change_reason,
        changed_by=principal.sub,
        if_match=if_match,
    )
    return _document(document)


@router.get(
    "/config/{tenant_id}/history",
    summary="List configuration versions",
    response_model=HistoryPage,
    responses=ERRORS,
)
async def config_history(
    tenant_id: TenantIdPath,
    principal: Caller,
    session: SessionDep,
    provider_type: ProviderTypeQuery = None,
    provider_name: ProviderNameQuery = None,
    config_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=NO_NUL_PATTERN,
            description="only this config's versions (its `id`)",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, description=f"versions per page, capped at {MAX_HISTORY_LIMIT}")
    ] = 50,
    cursor: PageCursor = None,
) -> Response:
    """Version rows, newest first, with secrets masked."""
    principal.require_tenant(tenant_id)
    page = await history.history(
        session,
        tenant_id,
        provider_type=provider_type,
        provider_name=provider_name,
        config_id=config_id,
        limit=min(limit, MAX_HISTORY_LIMIT),
        cursor=cursor,
    )
    return _json(page)


@router.get(
    "/config/{tenant_id}/diff",
    summary="Compare two versions of a configuration",
    response_model=ConfigDiff,
    responses=ERRORS,
)
async def config_diff(
    tenant_id: TenantIdPath,
    principal: Caller,
    session: SessionDep,
    config_id: Annotated[
        str,
        Query(
            min_length=1,
            max_length=64,
            pattern=NO_NUL_PATTERN,
            description="the configuration (its `id` in a document or history entry)",
        ),
    ],
    from_version: Annotated[
        int | None,
        Query(
            alias="from",
            ge=0,
            le=MAX_VERSION,
            description="the version to compare from (0: before the configuration existed); "
            "defaults to the one before `to`",
        ),
    ] = None,
    to_version: Annotated[
        int | None,
        Query(
            alias="to",
            ge=0,
            le=MAX_VERSION,
            description="the version to compare to; defaults to the current one",
        ),
    ] = None,
) -> Response:
    """What changed between two versions of one configuration, field by field.

    Secrets (`api_key`, `api_secret`) are shown only as changed, never with their values.
    """
    principal.require_tenant(tenant_id)
    diff = await history.diff_versions(
        session, tenant_id, config_id, from_version=from_version, to_version=to_version
    )
    return _json(diff)


@router.post(
    "/config/{tenant_id}/rollback",
    summary="Roll a configuration back to a version",
    response_model=None,
    responses={200: {"model": ConfigDocument | RollbackPreview}, **ERRORS, **openapi.errors(412)},
)
async def rollback_config(
    tenant_id: TenantIdPath,
    body: RollbackRequest,
    principal: Caller,
    session: SessionDep,
    domain: DomainDep,
    dry_run: Annotated[
        bool,
        Query(
            description="answer the changes the rollback would make (a `RollbackPreview`) and "
            "write nothing"
        ),
    ] = False,
    if_match: IfMatch = None,
) -> Response:
    """Write an old version's content as a new version (`rolled_back`).

    With `dry_run=true`, answer what it would change instead, with the same checks, and write
    nothing. `If-Match` makes either conditional, as for a POST (412).
    """
    principal.require_tenant(tenant_id)
    if dry_run:
        preview = await service.preview_rollback(
            session, domain, tenant_id, body, if_match=if_match
        )
        return _json(preview)
    document = await service.rollback(
        session, domain, tenant_id, body, changed_by=principal.sub, if_match=if_match
    )
    return _document(document)

"""The published OpenAPI document: operation ids, the bearer scheme and every error it answers.

FastAPI describes what each route returns on success and the statuses a route declares itself
(`responses=errors(404, 409)`, for the errors of its own domain). What every operation may answer
whatever its domain, the answers of the middleware and the error handlers, is added here from the
operation's entry in the permission table (app/core/permissions.py): 401 and 403 where a token and
a role are needed, 422 (the one field-error shape, not FastAPI's `HTTPValidationError`, which the
service never sends) wherever there is input, 413 with a body, 431, 429 and 503. Generated clients
read these; schemathesis checks the service against them (tests/contract).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.core import permissions
from app.core.schemas import ErrorResponse, FieldError, InvalidFieldsResponse

BEARER_SCHEME = "bearer"
# /metrics's own token (METRICS_BEARER_TOKEN), not a caller's JWT.
SCRAPE_SCHEME = "metricsToken"
# Operations that never touch the database or the cache, so never answer 503.
_NO_BACKEND = {"GET /livez", "GET /metrics"}
# Operations whose 503 is their own report (health, readiness), not the error body.
_OWN_503 = {"GET /api/v1/health", "GET /readyz"}
# Public, but the scrape token is asked for when the operator sets one (METRICS_BEARER_TOKEN).
_OPTIONAL_BEARER = {"GET /metrics"}


_DESCRIPTIONS = {
    400: "The request is malformed: a body that is not JSON, a cursor this listing did not "
    "return, or a token for several tenants that names none.",
    401: "No bearer token, or one that is invalid, expired or revoked.",
    403: "The token does not cover this tenant, or lacks the role this operation needs.",
    404: "No such object for this tenant (another tenant's object answers the same).",
    409: "The object is not in a state that allows this (see `error`).",
    412: "The `If-Match` precondition failed: the representation changed since that entity tag "
    "(the current one is in `current_etag`).",
    413: "The body is larger than REQUEST_MAX_BODY_BYTES.",
    422: "A field breaks its rules: each is named in `fields`.",
    429: "Too many requests from this caller; retry after `Retry-After` seconds.",
    431: "The request's headers are larger than REQUEST_MAX_HEADER_BYTES.",
    502: "The provider refused or failed the call (see `error` and `detail`).",
    503: "A backend (the database, or a provider being refreshed) is unavailable; retry after "
    "`Retry-After` seconds when it is given.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer"},
    }
}


# Models a route's hand-written `openapi_extra` refers to, added to the components.
_REFERENCED: dict[str, type[BaseModel]] = {}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    """A `$ref` to `model`'s schema, for a route that describes its body by hand."""
    _REFERENCED[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's own error statuses, for its decorator's `responses=`: the shared error body and
    the shared description of each."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        for status in statuses
    }


def operation_id(route: APIRoute) -> str:
    """`{tag}-{endpoint name}` with dashes (`configs-rollback-config`, `tokens-read-token`):
    readable, stable while the function keeps its name."""
    tag = str(route.tags[0]) if route.tags else "junction"
    return f"{tag}-{route.name.replace('_', '-')}"


def install(app: FastAPI) -> None:
    """Finish the document FastAPI generates (after `permissions.install`), once per app."""
    generate = app.openapi
    finished: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not finished:
            finished.update(_finish(generate()))
        return finished

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _finish(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    models: list[type[BaseModel]] = [ErrorResponse, FieldError, InvalidFieldsResponse]
    for model in [*models, *_REFERENCED.values()]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT with `sub`, `tenants` and `roles` (README, 'Permissions').",
    }
    components["securitySchemes"][SCRAPE_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "METRICS_BEARER_TOKEN, when the operator sets one (open otherwise).",
    }
    document["security"] = [{BEARER_SCHEME: []}]
    for path, methods in document.get("paths", {}).items():
        for method, operation in methods.items():
            key = permissions.operation_key(method, path)
            _declare_errors(operation, key, permissions.PERMISSIONS[key])
    return document


def _declare_errors(operation: dict[str, Any], key: str, entry: permissions.Operation) -> None:
    rule = entry.rule
    has_input = bool(operation.get("parameters")) or "requestBody" in operation
    statuses = {431, 429}
    if key not in _NO_BACKEND:
        statuses.add(503)
    if not rule.public:
        statuses.add(401)
        if rule.roles or rule.scope is not permissions.Scope.NONE or entry.conditions:
            statuses.add(403)
    if rule.scope is permissions.Scope.TENANT:
        statuses.add(400)  # a token for several tenants must name one
    if has_input:
        statuses.add(422)
    if any(parameter["name"] == "cursor" for parameter in operation.get("parameters", [])):
        statuses.add(400)  # a cursor this listing did not return
    if "requestBody" in operation:
        statuses.update((400, 413))  # 400: a body that is not JSON at all
    if rule.public:
        operation["security"] = [{}, {SCRAPE_SCHEME: []}] if key in _OPTIONAL_BEARER else []
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        responses.setdefault(str(status), {})
    for status, response in responses.items():
        if not status.startswith(("4", "5")) or (status == "503" and key in _OWN_503):
            continue
        # The route's own declaration keeps its description; the body is always the error's
        # JSON (FastAPI would give it a non-JSON route's media type, as /metrics's).
        kept = {} if status == "422" else _kept(int(status), response)
        response.update(_error_response(int(status)) | kept)
        if status in ("429", "503"):
            response.setdefault("headers", {}).update(_RETRY_AFTER)


def _kept(status: int, response: dict[str, Any]) -> dict[str, Any]:
    """A route's own description of an error, unless it is FastAPI's filler (the bare reason
    phrase, given to a status declared without one): the shared description says more."""
    description = response.get("description")
    filler = description == HTTPStatus(status).phrase
    return {"description": description} if description and not filler else {}


def _error_response(status: int) -> dict[str, Any]:
    model = InvalidFieldsResponse if status == 422 else ErrorResponse
    return {
        "description": _DESCRIPTIONS[status],
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }

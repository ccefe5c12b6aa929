"""The permission table: every operation of the OpenAPI document against every kind of caller.

The operations come from `app.openapi()`, the expected answers from the table
(app/core/permissions.py), read here on their own terms (public, roles, tenant scope): a route
added without a table entry, or served against its entry, fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core import permissions
from app.core.config import Settings
from app.core.deps import CurrentPrincipal
from app.core.permissions import Rule, Scope
from app.devtools.oauth_provider import LocalOAuthServer
from app.main import create_app
from tests.conftest import TokenFactory, bearer
from tests.oauth_fixtures import LOCAL_PROVIDER, client_body, connect_branch, register_client

TENANT = "tenant-a"
README = Path(__file__).resolve().parents[2] / "README.md"


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = create_app(Settings(_env_file=None)).openapi()
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


OPERATIONS = _operations()

# (tenants, roles) of each kind of caller; None: no token at all.
CALLERS: dict[str, tuple[list[str], list[str]] | None] = {
    "anonymous": None,
    "no role": ([TENANT], []),
    "service": ([TENANT], ["service"]),
    "admin": ([TENANT], ["admin"]),
    "admin of every tenant": (["*"], ["admin"]),
    "admin of another tenant": (["tenant-b"], ["admin", "service"]),
}

# A valid body for each operation that takes one, so that a caller of another tenant reaches
# the tenant check rather than a 422. An operation with a body and no entry here fails. A
# callable is given the test's local OAuth server.
_BODIES: dict[str, Any] = {
    "POST /token-management/clients": lambda server: client_body(
        server, tenant_id=TENANT, name="matrix app"
    ),
    "POST /config/{tenant_id}": {"map_providers": [{"provider_name": "matrix"}]},
    "POST /config/{tenant_id}/rollback": {"config_id": "c" * 32, "version": 1, "reason": "m"},
    "PATCH /token-management/clients/{client_id}": {"name": "renamed"},
    "POST /token-management/tokens/refresh": {
        "tenant_id": TENANT,
        "provider": LOCAL_PROVIDER,
        "branch_id": "branch-1",
    },
    "POST /auth/revoke": {},
    "PUT /api/admin/workspaces/{tenant_id}": {"name": "Matrix"},
    "PUT /api/admin/workspaces/{tenant_id}/usage/alerts": {"percents": [50, 80, 100]},
    "PUT /monitoring/webhook": {"url": "http://127.0.0.1:9/hooks"},
    "PUT /monitoring/operator-webhook": {"url": "http://127.0.0.1:9/hooks"},
    "POST /usage/openai": {
        "tenant_id": TENANT,
        "model": "gpt-4o-mini",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "source": "matrix",
    },
}

_QUERY_VALUES = {
    "tenant_id": TENANT,
    "provider": LOCAL_PROVIDER,
    "branch_id": "branch-1",
    "change_reason": "matrix",
    "state": "an-unknown-state",
    "config_id": "c" * 32,
}


# Query values an operation needs to answer at all: a change stream stays open until the token
# expires, and an in-process client waits for the whole answer, so it is read in its finite form.
_FINITE_ANSWER = {"GET /config/{tenant_id}/stream": {"follow": "false"}}


def _expected(rule: Rule, caller: str) -> str:
    """'allowed', 'refused' (403), 'unauthenticated' (401) or 'other tenant' (403/404)."""
    if rule.public:
        return "allowed"
    grant = CALLERS[caller]
    if grant is None:
        return "unauthenticated"
    tenants, roles = grant
    if rule.roles and not rule.roles.intersection(roles):
        return "refused"
    if rule.scope is Scope.ALL_TENANTS and "*" not in tenants:
        return "refused"
    if rule.scope is Scope.TENANT and TENANT not in tenants and "*" not in tenants:
        return "other tenant"
    return "allowed"


def _request(
    method: str,
    path: str,
    operation: dict[str, Any],
    objects: dict[str, str],
    server: LocalOAuthServer,
) -> dict[str, Any]:
    key = permissions.operation_key(method, path)
    url = path
    query: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if parameter["in"] == "path":
            url = url.replace(f"{{{name}}}", objects.get(name, _QUERY_VALUES.get(name, "x")))
        elif parameter["in"] == "query" and (parameter.get("required") or name == "tenant_id"):
            query[name] = _QUERY_VALUES[name]
    query.update(_FINITE_ANSWER.get(key, {}))
    request: dict[str, Any] = {"method": method, "url": url, "params": query}
    if "requestBody" in operation:
        assert key in _BODIES, f"add a valid example body for {key} to _BODIES"
        body = _BODIES[key]
        request["json"] = body(server) if callable(body) else body
    return request


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    OPERATIONS,
    ids=[f"{method} {path}" for method, path, _ in OPERATIONS],
)
async def test_every_operation_answers_every_caller_as_the_table_says(
    client: httpx.AsyncClient,
    make_token: TokenFactory,
    oauth_server: LocalOAuthServer,
    method: str,
    path: str,
    operation: dict[str, Any],
) -> None:
    key = permissions.operation_key(method, path)
    assert key in permissions.PERMISSIONS, f"{key} has no entry in the permission table"
    rule = permissions.PERMISSIONS[key].rule
    owner = make_token([TENANT], roles=["service"])
    connected = await connect_branch(client, owner, oauth_server, "branch-1")
    objects = {"client_id": connected["client_pk"]}
    # Refused callers first: they must change nothing, so the allowed ones find the objects.
    order = sorted(CALLERS, key=lambda caller: _expected(rule, caller) == "allowed")
    for caller in order:
        grant = CALLERS[caller]
        headers = bearer(make_token(grant[0], roles=grant[1])) if grant else {}
        request = _request(method, path, operation, objects, oauth_server)
        response = await client.request(**request, headers=headers)
        expected = _expected(rule, caller)
        context = f"{key} for '{caller}': {response.status_code} {response.text[:200]}"
        if expected == "allowed":
            assert response.status_code not in {401, 403}, context
        elif expected == "unauthenticated":
            assert response.status_code == 401, context
        elif expected == "refused":
            assert response.status_code == 403, context
        else:
            assert response.status_code in {403, 404}, context
        assert response.status_code != 500, context


def _console_operations() -> set[str]:
    """The admin console's routes: in the table, outside the OpenAPI document."""
    from fastapi.routing import APIRoute, iter_route_contexts

    app = create_app(Settings(_env_file=None))
    return {
        permissions.operation_key(method, str(route.path_format))
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) and not route.include_in_schema
        for method in route.methods or ()
    }


def test_every_route_has_exactly_one_table_entry() -> None:
    documented = {permissions.operation_key(method, path) for method, path, _ in OPERATIONS}
    console = _console_operations()
    assert console and all(key.split(" ", 1)[1].startswith("/admin") for key in console)
    assert documented | console == set(permissions.PERMISSIONS)
    assert not documented & console


def test_an_app_with_a_route_missing_from_the_table_does_not_start() -> None:
    app = create_app(Settings(_env_file=None))

    @app.get("/unlisted")
    async def unlisted() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="GET /unlisted"):
        permissions.install(app)


def test_the_openapi_document_publishes_each_operations_roles() -> None:
    for method, path, operation in OPERATIONS:
        entry = permissions.PERMISSIONS[permissions.operation_key(method, path)]
        assert set(operation["x-required-roles"]) == entry.rule.roles
        assert operation["x-tenant-scope"] == entry.rule.scope.value
        assert "**Permission**: " + permissions.describe(entry) in operation["description"]


def test_the_readme_publishes_the_whole_table() -> None:
    assert permissions.markdown_table() in README.read_text()


# --- the holes the table closes -----------------------------------------------------------------


async def test_a_member_without_a_role_cannot_point_a_client_at_another_refresh_url(
    client: httpx.AsyncClient, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    service = make_token([TENANT], roles=["service"])
    registered = await register_client(client, service, oauth_server)
    member = bearer(make_token([TENANT]))
    for field in ("refresh_url", "token_url", "revoke_url"):
        response = await client.patch(
            f"/token-management/clients/{registered['id']}",
            json={field: "http://127.0.0.1:9/steal"},
            headers=member,
        )
        assert response.status_code == 403, response.text
    unchanged = await client.get(f"/token-management/clients/{registered['id']}", headers=member)
    assert unchanged.json()["provider_settings"] == registered["provider_settings"]


async def test_a_member_without_a_role_may_start_a_login_and_read_status(
    client: httpx.AsyncClient, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    service = make_token([TENANT], roles=["service"])
    registered = await register_client(client, service, oauth_server)
    member = bearer(make_token([TENANT]))
    login = await client.get(
        f"/token-management/oauth/login/{registered['id']}",
        params={"branch_id": "branch-1"},
        headers=member,
    )
    assert login.status_code == 200, login.text
    status = await client.get("/platforms/connected", headers=member)
    assert status.status_code == 200, status.text


async def test_a_member_without_a_role_cannot_register_a_client_or_a_webhook(
    client: httpx.AsyncClient, make_token: TokenFactory, oauth_server: LocalOAuthServer
) -> None:
    member = bearer(make_token([TENANT]))
    registered = await client.post(
        "/token-management/clients", json=client_body(oauth_server), headers=member
    )
    assert registered.status_code == 403
    webhook = await client.put(
        "/monitoring/webhook", json={"url": "http://127.0.0.1:9/hooks"}, headers=member
    )
    assert webhook.status_code == 403


async def test_a_tenant_admin_cannot_revoke_another_token_by_its_jti(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    victim = make_token(["tenant-b"], roles=["admin"], jti="victim-jti")
    tenant_admin = bearer(make_token([TENANT], roles=["admin"]))
    refused = await client.post("/auth/revoke", json={"jti": "victim-jti"}, headers=tenant_admin)
    assert refused.status_code == 403
    still_valid = await client.get("/api/admin/workspaces/tenant-b/usage", headers=bearer(victim))
    assert still_valid.status_code == 200


async def test_an_admin_of_every_tenant_may_revoke_a_token_by_its_jti(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    victim = make_token(["tenant-b"], roles=["admin"], jti="victim-jti")
    operator = bearer(make_token(["*"], roles=["admin"]))
    revoked = await client.post("/auth/revoke", json={"jti": "victim-jti"}, headers=operator)
    assert revoked.status_code == 200
    refused = await client.get("/api/admin/workspaces/tenant-b/usage", headers=bearer(victim))
    assert refused.status_code == 401


async def test_anyone_may_revoke_the_token_they_present_even_naming_its_jti(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    token = make_token([TENANT], jti="own-jti")
    revoked = await client.post("/auth/revoke", json={"jti": "own-jti"}, headers=bearer(token))
    assert revoked.status_code == 200
    assert (await client.get("/platforms/connected", headers=bearer(token))).status_code == 401


async def test_a_route_added_after_the_table_was_installed_is_refused(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    @app.get("/added-later")
    async def added_later(principal: CurrentPrincipal) -> dict[str, str]:
        return {"sub": principal.sub}

    response = await client.get("/added-later", headers=bearer(make_token(["*"], ["admin"])))
    assert response.status_code == 403
    assert "permission table" in response.json()["detail"]

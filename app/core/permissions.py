"""Who may call what: the API's one permission table, enforced and published from here.

Every operation of the API has one entry in `PERMISSIONS`. `install(app)` checks the table against
the app's routes both ways at start-up (an operation without an entry stops the app, so a new
route cannot be forgotten), writes each entry into the OpenAPI document (`x-required-roles`,
`x-tenant-scope` and a sentence in the description), and keys the entry by the route's endpoint
so that `get_principal` (app/core/deps.py), the dependency of every authenticated route, checks
the matched operation's rule: the table is the enforcement, not a copy of it. `markdown_table()`
renders the same entries for the README.

The tenant itself is checked where the request names it (path, query, body or the object's own
tenant), by the route: `Scope.TENANT` says that such a check is part of the operation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts

from app.core.auth import ALL_TENANTS, ROLE_ADMIN, ROLE_SERVICE, Principal
from app.core.errors import Forbidden


class Scope(StrEnum):
    TENANT = "tenant"  # acts for one tenant, which the caller's `tenants` must hold
    ALL_TENANTS = "all"  # spans every tenant: needs `tenants: ["*"]`
    NONE = "none"  # touches no tenant's data (the caller's own token, the built-in registry)


@dataclass(frozen=True, slots=True)
class Rule:
    """What a caller needs: a bearer token (unless public), one of `roles` (none listed: no role
    needed) and, for `Scope.ALL_TENANTS`, a token for every tenant."""

    public: bool
    roles: frozenset[str]
    scope: Scope
    # Derived once: `check` runs on every authenticated request, the hot reads included.
    _all_tenants: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_all_tenants", self.scope is Scope.ALL_TENANTS)

    def check(self, principal: Principal) -> None:
        # `isdisjoint` rather than an intersection: no set is built on the hot reads.
        if self.roles and self.roles.isdisjoint(principal.roles):
            raise Forbidden(f"this operation needs the role {_either(self.roles, 'or')}")
        if self._all_tenants and ALL_TENANTS not in principal.tenants:
            raise Forbidden("this operation spans every tenant: it needs a token for '*'")

    def sentence(self) -> str:
        """Who may call, as a clause: "a bearer token for the tenant, with the role `admin`"."""
        if self.public:
            return "no bearer token needed"
        who = {
            Scope.TENANT: "a bearer token for the tenant",
            Scope.ALL_TENANTS: 'a bearer token for every tenant (`tenants: ["*"]`)',
            Scope.NONE: "any valid bearer token",
        }[self.scope]
        if not self.roles:
            return f"{who}; no role needed"
        return f"{who}, with the role {_either(self.roles, 'or')}"


def _either(roles: frozenset[str], word: str) -> str:
    return f" {word} ".join(f"`{role}`" for role in _sorted_roles(roles))


_ROLE_ORDER = [ROLE_SERVICE, ROLE_ADMIN]
_NO_ROLE: frozenset[str] = frozenset()
_SERVICE_ROLES = frozenset({ROLE_SERVICE, ROLE_ADMIN})

PUBLIC = Rule(public=True, roles=_NO_ROLE, scope=Scope.NONE)
ANY_CALLER = Rule(public=False, roles=_NO_ROLE, scope=Scope.NONE)
MEMBER = Rule(public=False, roles=_NO_ROLE, scope=Scope.TENANT)
SERVICE = Rule(public=False, roles=_SERVICE_ROLES, scope=Scope.TENANT)
ADMIN = Rule(public=False, roles=frozenset({ROLE_ADMIN}), scope=Scope.TENANT)
ADMIN_OF_ALL_TENANTS = Rule(public=False, roles=frozenset({ROLE_ADMIN}), scope=Scope.ALL_TENANTS)


@dataclass(frozen=True, slots=True)
class Condition:
    """A stricter rule for one form of an operation, checked by the code that serves it."""

    when: str
    rule: Rule

    def check(self, principal: Principal) -> None:
        self.rule.check(principal)


@dataclass(frozen=True, slots=True)
class Operation:
    rule: Rule
    why: str
    conditions: tuple[Condition, ...] = ()


# The forms of an operation that need more than the operation itself.
REVEAL_CONFIG_SECRETS = Condition("with `include_secrets=true`", SERVICE)
REVOKE_BY_JTI = Condition("with a `jti` other than the presented token's", ADMIN_OF_ALL_TENANTS)

_SENDS_SECRETS = "the server sends stored secrets to the URLs this sets"
_CONSOLE = "the console spans every tenant (session cookie and CSRF token)"
_CONSOLE_SIGN_IN = "signing in to the console: no session yet"

PERMISSIONS: dict[str, Operation] = {
    # health and operations
    "GET /api/v1/health": Operation(PUBLIC, "probes carry no token"),
    "GET /livez": Operation(PUBLIC, "probes carry no token"),
    "GET /readyz": Operation(PUBLIC, "probes carry no token"),
    "GET /metrics": Operation(PUBLIC, "scrapers carry no token"),
    # revocation
    "POST /auth/revoke": Operation(
        ANY_CALLER,
        "anyone may revoke the token they present",
        (REVOKE_BY_JTI,),
    ),
    # tokens: providers and clients
    "GET /token-management/providers": Operation(ANY_CALLER, "the built-in registry"),
    "GET /token-management/clients": Operation(MEMBER, "status: no secret is shown"),
    "GET /token-management/clients/{client_id}": Operation(MEMBER, "status: no secret is shown"),
    "GET /token-management/connections": Operation(MEMBER, "status: no token is shown"),
    "POST /token-management/clients": Operation(
        SERVICE, f"stores a client secret; {_SENDS_SECRETS} (token/refresh/revoke, return URLs)"
    ),
    "PATCH /token-management/clients/{client_id}": Operation(
        SERVICE, f"{_SENDS_SECRETS} (token/refresh/revoke, return URLs)"
    ),
    "DELETE /token-management/clients/{client_id}": Operation(
        SERVICE, "deletes the client's connections, as a disconnect does"
    ),
    # tokens: logins and connections
    "GET /token-management/oauth/login/{client_id}": Operation(
        MEMBER, "starts a login; the return URL must be in the client's allowlist"
    ),
    "GET /token-management/auth/callback": Operation(
        PUBLIC, "the provider's redirect; the single-use state says whose login it is"
    ),
    "GET /token-management/tokens/{branch_id}": Operation(
        SERVICE, "access tokens go to backends, not browsers"
    ),
    "POST /token-management/tokens/refresh": Operation(
        SERVICE, "access tokens go to backends, not browsers"
    ),
    "DELETE /token-management/tokens/{branch_id}": Operation(
        SERVICE, "sends the stored token to the provider's revoke URL, then deletes it"
    ),
    # platforms and monitoring
    "GET /platforms/connected": Operation(MEMBER, "status"),
    "GET /monitoring/events": Operation(MEMBER, "status"),
    "GET /monitoring/status": Operation(ADMIN_OF_ALL_TENANTS, "the counts cover every tenant"),
    "GET /monitoring/webhook": Operation(MEMBER, "status: the secret is shown masked"),
    "PUT /monitoring/webhook": Operation(
        SERVICE, "the server sends signed events to the URL this sets"
    ),
    "DELETE /monitoring/webhook": Operation(SERVICE, "stops the tenant's alerts"),
    "GET /monitoring/webhook/deliveries": Operation(
        MEMBER, "status: attempts and outcomes, no body or secret"
    ),
    "POST /monitoring/webhook/deliveries/{delivery_id}/redeliver": Operation(
        SERVICE, "the server sends a signed event to the webhook's URL again"
    ),
    "GET /monitoring/operator-webhook": Operation(
        ADMIN_OF_ALL_TENANTS, "the operator's webhook receives every tenant's events"
    ),
    "PUT /monitoring/operator-webhook": Operation(
        ADMIN_OF_ALL_TENANTS, "the server sends every tenant's signed events to the URL this sets"
    ),
    "DELETE /monitoring/operator-webhook": Operation(
        ADMIN_OF_ALL_TENANTS, "stops the operator's alerts"
    ),
    "GET /monitoring/operator-webhook/deliveries": Operation(
        ADMIN_OF_ALL_TENANTS, "the log covers every tenant's events"
    ),
    "POST /monitoring/operator-webhook/deliveries/{delivery_id}/redeliver": Operation(
        ADMIN_OF_ALL_TENANTS, "the server sends a signed event to the operator's URL again"
    ),
    # provider configurations
    "GET /config/{tenant_id}": Operation(
        MEMBER, "secrets are masked unless revealed", (REVEAL_CONFIG_SECRETS,)
    ),
    "GET /config/{tenant_id}/history": Operation(MEMBER, "secrets are masked"),
    "GET /config/{tenant_id}/diff": Operation(MEMBER, "secrets are shown only as changed"),
    "GET /config/{tenant_id}/stream": Operation(MEMBER, "secrets are masked, diffs say changed"),
    "POST /config/{tenant_id}": Operation(
        SERVICE,
        "stores API keys, and can point a stored key at other settings (omitted keys are kept)",
    ),
    "DELETE /config/{tenant_id}": Operation(SERVICE, "removes stored API keys"),
    "POST /config/{tenant_id}/rollback": Operation(
        SERVICE, "restores an old version's API keys and settings"
    ),
    # usage
    "POST /usage/openai": Operation(SERVICE, "usage is recorded by backends"),
    "GET /usage/{tenant_id}/quota": Operation(MEMBER, "status"),
    "GET /api/admin/workspaces/{tenant_id}/usage": Operation(ADMIN, "an admin route"),
    "GET /api/admin/workspaces/{tenant_id}/usage/alerts": Operation(ADMIN, "an admin route"),
    "PUT /api/admin/workspaces/{tenant_id}/usage/alerts": Operation(ADMIN, "an admin route"),
    # workspaces
    "GET /api/admin/workspaces/{tenant_id}": Operation(ADMIN, "an admin route"),
    "PUT /api/admin/workspaces/{tenant_id}": Operation(ADMIN, "an admin route"),
    "GET /api/admin/workspaces": Operation(ADMIN_OF_ALL_TENANTS, "the list covers every tenant"),
    "DELETE /api/admin/workspaces/{tenant_id}": Operation(
        ADMIN, "offboarding: revokes and deletes everything the tenant has"
    ),
    "GET /api/admin/workspace-deletions": Operation(
        ADMIN_OF_ALL_TENANTS, "the record outlives the tenants it names"
    ),
    # the admin console (app/admin): pages and forms, not in the OpenAPI document. A console
    # session is opened only for an admin of every tenant (a one-time link from the operator's
    # shell, or such a bearer token) and stands for that caller; its forms carry a CSRF token.
    "GET /admin/sign-in": Operation(PUBLIC, _CONSOLE_SIGN_IN),
    "POST /admin/sign-in": Operation(PUBLIC, _CONSOLE_SIGN_IN),
    "GET /admin/link": Operation(PUBLIC, _CONSOLE_SIGN_IN),
    "POST /admin/link": Operation(PUBLIC, _CONSOLE_SIGN_IN),
    "POST /admin/sign-out": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "GET /admin": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "GET /admin/workspaces": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "GET /admin/workspaces/{tenant_id}": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "GET /admin/workspaces/{tenant_id}/connections": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "GET /admin/workspaces/{tenant_id}/usage": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "POST /admin/workspaces/{tenant_id}/connections/refresh": Operation(
        ADMIN_OF_ALL_TENANTS, _CONSOLE
    ),
    "POST /admin/workspaces/{tenant_id}/connections/disconnect": Operation(
        ADMIN_OF_ALL_TENANTS, _CONSOLE
    ),
    "POST /admin/workspaces/{tenant_id}/tier": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "GET /admin/configs": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "GET /admin/configs/{tenant_id}/{config_id}": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "GET /admin/configs/{tenant_id}/{config_id}/diff": Operation(ADMIN_OF_ALL_TENANTS, _CONSOLE),
    "POST /admin/configs/{tenant_id}/{config_id}/rollback/preview": Operation(
        ADMIN_OF_ALL_TENANTS, _CONSOLE
    ),
    "POST /admin/configs/{tenant_id}/{config_id}/rollback": Operation(
        ADMIN_OF_ALL_TENANTS, _CONSOLE
    ),
}

# Filled by `install`: the rule of each operation, keyed by its endpoint (Starlette puts the
# matched endpoint in the request scope; routes themselves are not hashable). The same functions
# serve every app built in a process, with the same rules.
_RULES: dict[object, Rule] = {}


def operation_key(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def install(app: FastAPI) -> None:
    """Check the table against `app`'s routes, make each entry enforced and documented."""
    listed: set[str] = set()
    for route in iter_route_contexts(app.routes):
        # Every operation, those outside the OpenAPI document (the console's pages) included.
        if not isinstance(route.original_route, APIRoute):
            continue
        keys = [operation_key(method, str(route.path_format)) for method in route.methods or ()]
        missing = sorted(key for key in keys if key not in PERMISSIONS)
        if missing:
            raise RuntimeError(f"no entry in the permission table for {', '.join(missing)}")
        rules = {PERMISSIONS[key].rule for key in keys}
        rule = rules.pop()
        # Enforcement looks the rule up by endpoint: one endpoint must mean one rule.
        if rules or _RULES.setdefault(route.endpoint, rule) != rule:
            raise RuntimeError(f"one endpoint, several rules: {', '.join(keys)}")
        listed.update(keys)
    unused = sorted(set(PERMISSIONS) - listed)
    if unused:
        raise RuntimeError(f"permission table entries without a route: {', '.join(unused)}")
    _document_in_openapi(app)


def _document_in_openapi(app: FastAPI) -> None:
    """Add each operation's entry to the OpenAPI document FastAPI generates (and caches)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        for path, methods in document.get("paths", {}).items():
            for method, operation in methods.items():
                entry = PERMISSIONS.get(operation_key(method, path))
                if entry is not None and "x-required-roles" not in operation:
                    _document(operation, entry)
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _document(operation: dict[str, Any], entry: Operation) -> None:
    rule = entry.rule
    operation["x-required-roles"] = _sorted_roles(rule.roles)
    operation["x-tenant-scope"] = rule.scope.value
    if rule.public:
        operation["security"] = []
    if entry.conditions:
        operation["x-conditional-roles"] = [
            {
                "when": condition.when,
                "required-roles": _sorted_roles(condition.rule.roles),
                "tenant-scope": condition.rule.scope.value,
            }
            for condition in entry.conditions
        ]
    sentence = f"**Permission**: {describe(entry)}"
    description = operation.get("description")
    operation["description"] = f"{description}\n\n{sentence}" if description else sentence


def _sorted_roles(roles: frozenset[str]) -> list[str]:
    return sorted(roles, key=_ROLE_ORDER.index)


def describe(operation: Operation) -> str:
    """The operation's permission in one or two sentences (OpenAPI and the README)."""
    sentence = operation.rule.sentence()
    text = f"{sentence[:1].upper()}{sentence[1:]} ({operation.why})."
    for condition in operation.conditions:
        when = condition.when
        text += f" {when[:1].upper()}{when[1:]}: {condition.rule.sentence()}."
    return text


def rule_for(request: Request) -> Rule:
    """The rule of the operation `request` matched; a route outside the table is refused (it
    can only be one added after `install`, such as a test's or a benchmark's own)."""
    rule = _RULES.get(request.scope.get("endpoint"))
    if rule is None:
        raise Forbidden("this operation has no entry in the permission table")
    return rule


def markdown_table() -> str:
    """The table as the README publishes it."""
    lines = [
        "| operation | who may call it | why |",
        "|---|---|---|",
    ]
    for key, operation in PERMISSIONS.items():
        who = _short(operation.rule)
        for condition in operation.conditions:
            who += f"; {condition.when}: {_short(condition.rule)}"
        lines.append(f"| `{key}` | {who} | {operation.why} |")
    return "\n".join(lines)


def _short(rule: Rule) -> str:
    if rule.public:
        return "anyone (no token)"
    who = _either(rule.roles, "or") if rule.roles else "no role needed"
    if rule.scope is Scope.TENANT:
        return f"{who}, for the tenant"
    if rule.scope is Scope.ALL_TENANTS:
        return f'{who}, for every tenant (`"*"`)'
    return f"{who}, any valid token"

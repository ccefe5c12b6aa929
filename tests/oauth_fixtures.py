"""Helpers around the local OAuth server: register a client, complete a login, connect a branch.

Plain functions and constants, imported by name (`from tests.oauth_fixtures import
connect_branch`). The `oauth_server` fixture itself lives in tests/conftest.py, so every test
module can ask for it without importing it.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx

LOCAL_PROVIDER = "local_oauth"
REDIRECT_URI = "http://localhost:8000/token-management/auth/callback"
RETURN_URL = "https://app.example.com/integrations/done"
# A custom provider's margin; the server's default token lifetime (3600 s) is well beyond it.
LOCAL_REFRESH_MARGIN_S = 60


class AuthorizationServer(Protocol):
    """What these helpers need of the provider: the local OAuth server in this process
    (`app.devtools.oauth_provider.LocalOAuthServer`) or in one of its own (the benchmarks')."""

    client_id: str
    client_secret: str

    def provider_urls(self) -> dict[str, str]: ...


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_body(
    server: AuthorizationServer, *, provider: str = LOCAL_PROVIDER, **overrides: Any
) -> dict[str, Any]:
    """A client registration body for `server`: as a custom provider unless `provider` is a
    built-in name (then the settings' overrides must point the built-in at the server)."""
    body: dict[str, Any] = {
        "provider": provider,
        "name": f"{provider} app",
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "redirect_uri": REDIRECT_URI,
        "scopes": ["read", "write"],
        "return_urls": [RETURN_URL],
    }
    if provider == LOCAL_PROVIDER:
        body.update(server.provider_urls())
        body["refresh_margin_s"] = LOCAL_REFRESH_MARGIN_S
    body.update(overrides)
    return body


async def register_client(
    client: httpx.AsyncClient,
    token: str,
    server: AuthorizationServer,
    *,
    provider: str = LOCAL_PROVIDER,
    **overrides: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/token-management/clients",
        json=client_body(server, provider=provider, **overrides),
        headers=_auth(token),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def follow_authorization(authorization_url: str) -> str:
    """Play the browser at the provider: returns the redirect (callback) URL it sends back."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(authorization_url)
    assert response.status_code == 302, response.text
    return str(response.headers["location"])


async def complete_login(
    client: httpx.AsyncClient,
    token: str,
    client_pk: str,
    branch_id: str,
    *,
    return_url: str | None = None,
    tenant_id: str | None = None,
) -> httpx.Response:
    """Start a login, let the provider redirect, and deliver the callback (no bearer token)."""
    params: dict[str, str] = {"branch_id": branch_id}
    if return_url:
        params["return_url"] = return_url
    if tenant_id:
        params["tenant_id"] = tenant_id
    login = await client.get(
        f"/token-management/oauth/login/{client_pk}", params=params, headers=_auth(token)
    )
    assert login.status_code == 200, login.text
    callback_url = await follow_authorization(login.json()["authorization_url"])
    parts = urlsplit(callback_url)
    return await client.get(f"{parts.path}?{parts.query}")


def callback_params(callback_url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(callback_url).query).items()}


async def connect_branch(
    client: httpx.AsyncClient,
    token: str,
    server: AuthorizationServer,
    branch_id: str = "branch-1",
    *,
    provider: str = LOCAL_PROVIDER,
    client_pk: str | None = None,
    tenant_id: str | None = None,
) -> dict[str, Any]:
    """Register a client (unless `client_pk` is given) and complete a login for `branch_id`.

    Returns {"client_pk", "provider", "branch_id", "expires_at"}.
    """
    if client_pk is None:
        overrides = {"tenant_id": tenant_id} if tenant_id else {}
        client_pk = (await register_client(client, token, server, provider=provider, **overrides))[
            "id"
        ]
    callback = await complete_login(client, token, client_pk, branch_id, tenant_id=tenant_id)
    assert callback.status_code == 200, callback.text
    body = callback.json()
    assert body["status"] == "connected"
    return {
        "client_pk": client_pk,
        "provider": provider,
        "branch_id": branch_id,
        "expires_at": body["expires_at"],
    }

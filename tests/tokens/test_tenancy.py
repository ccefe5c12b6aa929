"""Every route of the package, called with tenant B's token on tenant A's objects."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens.models import OAuthClient, OAuthConnection, OAuthState
from tests.conftest import bearer
from tests.oauth_fixtures import LOCAL_PROVIDER, client_body, connect_branch
from tests.tokens.helpers import read_token


async def _snapshot(app) -> tuple:
    async with app_state(app).sessionmaker() as session:
        clients = [
            (c.id, c.name, c.client_secret_enc, c.scopes)
            for c in await session.scalars(select(OAuthClient))
        ]
        connections = [
            (c.id, c.access_token_enc, c.refresh_token_enc, c.status)
            for c in await session.scalars(select(OAuthConnection))
        ]
        states = await session.scalar(select(func.count()).select_from(OAuthState))
    return clients, connections, states


async def test_tenant_b_cannot_see_or_change_tenant_a_objects(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token_a = make_token(tenants=["tenant-a"], roles=["service"])
    token_b = make_token(tenants=["tenant-b"], roles=["service"])
    connected = await connect_branch(client, token_a, oauth_server)
    client_pk = connected["client_pk"]
    before = await _snapshot(app)
    calls_before = dict(oauth_server.calls)
    b = bearer(token_b)
    base = "/token-management"
    token_params = {"provider": LOCAL_PROVIDER}
    refresh_body = {"branch_id": "branch-1", "provider": LOCAL_PROVIDER}

    not_found = [
        await client.get(f"{base}/clients/{client_pk}", headers=b),
        await client.patch(f"{base}/clients/{client_pk}", json={"name": "x"}, headers=b),
        await client.delete(f"{base}/clients/{client_pk}", headers=b),
        await client.get(f"{base}/oauth/login/{client_pk}", params={"branch_id": "x"}, headers=b),
        await client.get(
            f"{base}/clients/{client_pk}", params={"tenant_id": "tenant-b"}, headers=b
        ),
        await client.get(f"{base}/tokens/branch-1", params=token_params, headers=b),
        await client.post(f"{base}/tokens/refresh", json=refresh_body, headers=b),
        await client.delete(f"{base}/tokens/branch-1", params=token_params, headers=b),
    ]
    forbidden = [
        await client.get(f"{base}/clients", params={"tenant_id": "tenant-a"}, headers=b),
        await client.post(
            f"{base}/clients", json=client_body(oauth_server, tenant_id="tenant-a"), headers=b
        ),
        await client.get(
            f"{base}/clients/{client_pk}", params={"tenant_id": "tenant-a"}, headers=b
        ),
        await client.get(
            f"{base}/oauth/login/{client_pk}",
            params={"branch_id": "x", "tenant_id": "tenant-a"},
            headers=b,
        ),
        await client.get(
            f"{base}/tokens/branch-1", params={**token_params, "tenant_id": "tenant-a"}, headers=b
        ),
        await client.post(
            f"{base}/tokens/refresh", json={**refresh_body, "tenant_id": "tenant-a"}, headers=b
        ),
        await client.delete(
            f"{base}/tokens/branch-1", params={**token_params, "tenant_id": "tenant-a"}, headers=b
        ),
    ]
    own_list = await client.get(f"{base}/clients", headers=b)

    assert [r.status_code for r in not_found] == [404] * len(not_found)
    assert [r.status_code for r in forbidden] == [403] * len(forbidden)
    assert own_list.json()["items"] == []
    assert await _snapshot(app) == before
    assert dict(oauth_server.calls) == calls_before
    assert (await read_token(client, token_a)).status_code == 200

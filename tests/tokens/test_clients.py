"""Registering, reading, editing and removing OAuth clients."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from app.core.crypto import DecryptionError, associated_data
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens.models import OAuthClient
from tests.conftest import bearer
from tests.oauth_fixtures import client_body, connect_branch, register_client
from tests.tokens.helpers import all_connections, read_token


async def _stored_client(app) -> OAuthClient:
    async with app_state(app).sessionmaker() as session:
        row = await session.scalar(select(OAuthClient))
    assert row is not None
    return row


async def test_created_client_never_returns_its_secret(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])

    created = await client.post(
        "/token-management/clients", json=client_body(oauth_server), headers=bearer(token)
    )
    listed = await client.get("/token-management/clients", headers=bearer(token))
    read = await client.get(
        f"/token-management/clients/{created.json()['id']}", headers=bearer(token)
    )

    assert created.status_code == 201
    for response in (created, listed, read):
        assert oauth_server.client_secret not in response.text
        assert '"client_secret"' not in response.text
    assert created.json()["has_client_secret"] is True
    assert created.json()["client_id"] == oauth_server.client_id
    assert created.json()["tenant_id"] == "tenant-a"
    assert [c["id"] for c in listed.json()["items"]] == [created.json()["id"]]


async def test_client_secret_is_encrypted_and_bound_to_its_row(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    await register_client(client, make_token(roles=["service"]), oauth_server)
    row = await _stored_client(app)
    keyring = app_state(app).keyring

    assert oauth_server.client_secret not in row.client_secret_enc
    aad = associated_data("oauth_clients", "client_secret", row.tenant_id, row.id)
    assert keyring.decrypt(row.client_secret_enc, aad) == oauth_server.client_secret
    with pytest.raises(DecryptionError):
        keyring.decrypt(
            row.client_secret_enc,
            associated_data("oauth_clients", "client_secret", row.tenant_id, "another-row"),
        )


async def test_patch_changes_fields_and_secret(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    created = await register_client(client, token, oauth_server)

    response = await client.patch(
        f"/token-management/clients/{created['id']}",
        json={"name": "renamed", "client_secret": "new-secret-value", "scopes": ["read"]},
        headers=bearer(token),
    )

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "renamed"
    assert response.json()["scopes"] == ["read"]
    assert "new-secret-value" not in response.text
    row = await _stored_client(app)
    aad = associated_data("oauth_clients", "client_secret", row.tenant_id, row.id)
    assert app_state(app).keyring.decrypt(row.client_secret_enc, aad) == "new-secret-value"


async def test_delete_removes_the_client_and_its_connections(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    connected = await connect_branch(client, token, oauth_server)

    response = await client.delete(
        f"/token-management/clients/{connected['client_pk']}", headers=bearer(token)
    )

    assert response.status_code == 204
    assert await all_connections(app) == []
    assert (await read_token(client, token)).status_code == 404
    missing = await client.get(
        f"/token-management/clients/{connected['client_pk']}", headers=bearer(token)
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"redirect_uri": "http://example.com/callback"}, "redirect_uri"),
        ({"return_urls": ["javascript:alert(1)"]}, "return_urls"),
        ({"token_url": "ftp://127.0.0.1/token"}, "token_url"),
        ({"provider": "Not A Slug"}, "provider"),
        ({"scopes": ["has space"]}, "scopes"),
        ({"surprise": 1}, "surprise"),
        ({"body_format": "xml"}, "body_format"),
    ],
)
async def test_invalid_client_bodies_are_refused_naming_the_field(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer, overrides, field
) -> None:
    response = await client.post(
        "/token-management/clients",
        json=client_body(oauth_server, **overrides),
        headers=bearer(make_token(roles=["service"])),
    )

    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    async with app_state(app).sessionmaker() as session:
        assert (await session.scalar(select(OAuthClient))) is None


async def test_custom_provider_needs_a_token_url(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    body = client_body(oauth_server)
    del body["token_url"]

    response = await client.post(
        "/token-management/clients", json=body, headers=bearer(make_token(roles=["service"]))
    )

    assert response.status_code == 422
    assert "token_url" in response.json()["detail"]


async def test_built_in_provider_refuses_custom_urls(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    body = client_body(oauth_server, provider="wix")
    body["token_url"] = oauth_server.provider_urls()["token_url"]

    response = await client.post(
        "/token-management/clients", json=body, headers=bearer(make_token(roles=["service"]))
    )

    assert response.status_code == 422
    assert "token_url" in response.json()["detail"]


async def test_https_urls_are_accepted_for_any_host(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    body = client_body(
        oauth_server,
        provider="wordpress",
        redirect_uri="https://junction.example.com/token-management/auth/callback",
        return_urls=["https://app.example.com/done"],
    )

    response = await client.post(
        "/token-management/clients", json=body, headers=bearer(make_token(roles=["service"]))
    )

    assert response.status_code == 201, response.text
    assert response.json()["provider_settings"] == {}


async def test_a_token_with_several_tenants_must_name_one(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(tenants=["tenant-a", "tenant-b"], roles=["service"])

    unnamed = await client.post(
        "/token-management/clients", json=client_body(oauth_server), headers=bearer(token)
    )
    named = await client.post(
        "/token-management/clients",
        json=client_body(oauth_server, tenant_id="tenant-b"),
        headers=bearer(token),
    )

    assert unnamed.status_code == 400
    assert named.status_code == 201
    assert named.json()["tenant_id"] == "tenant-b"

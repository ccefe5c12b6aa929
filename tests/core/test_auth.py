"""Bearer-token authentication, revocation and tenant access."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.core.auth import Principal, TokenVerifier
from app.core.config import Settings
from app.core.errors import Unauthorized
from app.state import app_state
from tests.conftest import IS_POSTGRES, TokenFactory, bearer, build_settings, running_app

ADMIN_ROUTE = "/api/admin/workspaces/tenant-a/usage"


def _claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "user-1",
        "tenants": ["tenant-a"],
        "roles": ["admin"],
        "aud": settings.auth_audience,
        "exp": now + 600,
        "iat": now,
        "jti": "jti-1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_a_request_without_a_token_gets_401(client: httpx.AsyncClient) -> None:
    response = await client.get(ADMIN_ROUTE)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_non_bearer_scheme_gets_401(client: httpx.AsyncClient) -> None:
    response = await client.get(ADMIN_ROUTE, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


async def test_an_unsigned_alg_none_token_gets_401(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(settings))}."
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_a_token_signed_with_the_wrong_key_gets_401(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    token = jwt.encode(_claims(settings), "not-the-server-secret-" + "x" * 20, algorithm="HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert "bad signature" in response.json()["detail"]


async def test_an_expired_token_gets_401(client: httpx.AsyncClient, settings: Settings) -> None:
    expired = _claims(settings, exp=int(time.time()) - 120)
    token = jwt.encode(expired, settings.jwt_secret, algorithm="HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "token_expired"


async def test_a_token_for_another_audience_gets_401(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    token = jwt.encode(_claims(settings, aud="someone-else"), settings.jwt_secret, "HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert "audience" in response.json()["detail"]


async def test_a_token_without_exp_gets_401(client: httpx.AsyncClient, settings: Settings) -> None:
    claims = _claims(settings)
    del claims["exp"]
    token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert "exp" in response.json()["detail"]


async def test_a_token_without_sub_gets_401(client: httpx.AsyncClient, settings: Settings) -> None:
    token = jwt.encode(_claims(settings, sub=None), settings.jwt_secret, algorithm="HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401


async def test_a_tenant_missing_from_the_claims_gets_403(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    token = make_token(tenants=["tenant-b"], roles=["admin"])
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 403
    assert "tenant-a" in response.json()["detail"]


async def test_an_admin_route_without_the_admin_role_gets_403(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    token = make_token(tenants=["tenant-a"], roles=["service"])
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 403


async def test_a_valid_token_is_accepted(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.get(ADMIN_ROUTE, headers=bearer(make_token(roles=["admin"])))
    assert response.status_code == 200


async def test_a_revoked_token_gets_401_on_its_next_request(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    token = make_token(roles=["admin"])
    revoked = await client.post("/auth/revoke", headers=bearer(token))
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "token_revoked"


async def test_revoking_one_token_leaves_others_valid(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    first, second = make_token(roles=["admin"]), make_token(roles=["admin"])
    await client.post("/auth/revoke", headers=bearer(first))
    response = await client.get(ADMIN_ROUTE, headers=bearer(second))
    assert response.status_code == 200


async def test_only_an_admin_of_every_tenant_may_revoke_another_token(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    user = make_token(roles=[])
    refused = await client.post("/auth/revoke", headers=bearer(user), json={"jti": "other"})
    assert refused.status_code == 403
    admin = make_token(["*"], roles=["admin"])
    target = make_token(roles=["admin"], jti="target-jti")
    allowed = await client.post("/auth/revoke", headers=bearer(admin), json={"jti": "target-jti"})
    assert allowed.status_code == 200
    assert (await client.get(ADMIN_ROUTE, headers=bearer(target))).status_code == 401


async def test_a_revocation_reaches_a_second_instance(
    settings: Settings, make_token: TokenFactory
) -> None:
    token = make_token(roles=["admin"])
    async with running_app(settings) as (_, first), running_app(settings) as (app2, second):
        assert (await second.get(ADMIN_ROUTE, headers=bearer(token))).status_code == 200
        await first.post("/auth/revoke", headers=bearer(token))
        if IS_POSTGRES:
            # The Redis bus delivers asynchronously, as it would to another replica.
            for _ in range(100):
                if (await second.get(ADMIN_ROUTE, headers=bearer(token))).status_code == 401:
                    break
                await asyncio.sleep(0.02)
        else:
            # Without Redis there is no bus: another process learns from the periodic sync.
            await app_state(app2).revocations.sync()
        assert (await second.get(ADMIN_ROUTE, headers=bearer(token))).status_code == 401


async def test_rs256_tokens_verify_against_the_public_key_and_hs256_confusion_fails(
    database_url: str,
) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = build_settings(database_url, auth_jwt_public_key=public_pem, auth_issuer="idp")
    claims = _claims(settings, iss="idp")
    good = jwt.encode(claims, private_key, algorithm="RS256")
    wrong_issuer = jwt.encode({**claims, "iss": "other"}, private_key, algorithm="RS256")
    async with running_app(settings) as (_, client):
        assert (await client.get(ADMIN_ROUTE, headers=bearer(good))).status_code == 200
        assert (await client.get(ADMIN_ROUTE, headers=bearer(wrong_issuer))).status_code == 401
        # An HS256 token "signed" with the public key must not pass as RS256.
        forged = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(claims) + ".c2ln"
        assert (await client.get(ADMIN_ROUTE, headers=bearer(forged))).status_code == 401


async def test_a_verified_token_is_reused_without_a_second_signature_check(
    settings: Settings, make_token: TokenFactory
) -> None:
    verifier = TokenVerifier(settings)
    token = make_token()
    assert await verifier.verify(token) is await verifier.verify(token)


async def test_a_cached_principal_past_its_expiry_is_not_reused(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    past = int(time.time()) - 120
    token = jwt.encode(_claims(settings, exp=past), settings.jwt_secret, algorithm="HS256")
    verifier._verified[token] = Principal(
        sub="user-1",
        tenants=frozenset(["tenant-a"]),
        roles=frozenset(),
        jti="jti-1",
        expires_at=datetime.fromtimestamp(past, UTC),
    )
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


async def test_a_signed_token_with_an_absurd_exp_gets_401_not_500(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    token = jwt.encode(_claims(settings, exp=10**20), settings.jwt_secret, algorithm="HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401


async def test_a_sub_with_control_characters_gets_401(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    token = jwt.encode(_claims(settings, sub="evil\x00user"), settings.jwt_secret, "HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("tenants", "*"),
        ("tenants", "tenant-a"),
        ("roles", "admin"),
        ("roles", [1]),
        ("tenants", {}),
    ],
)
async def test_tenants_and_roles_that_are_not_lists_of_strings_get_401(
    client: httpx.AsyncClient, settings: Settings, claim: str, value: Any
) -> None:
    token = jwt.encode(_claims(settings, **{claim: value}), settings.jwt_secret, "HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert claim in response.json()["detail"]


@pytest.mark.parametrize("jti", [12345, "", "j" * 1025, "bad\njti"])
async def test_a_jti_that_is_not_a_printable_string_of_sane_length_gets_401(
    client: httpx.AsyncClient, settings: Settings, jti: Any
) -> None:
    token = jwt.encode(_claims(settings, jti=jti), settings.jwt_secret, "HS256")
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_a_token_without_a_jti_is_accepted_but_cannot_be_revoked(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    token = jwt.encode(_claims(settings, jti=None), settings.jwt_secret, "HS256")
    assert (await client.get(ADMIN_ROUTE, headers=bearer(token))).status_code == 200
    response = await client.post("/auth/revoke", headers=bearer(token))
    assert response.status_code == 400


async def test_a_token_without_iss_gets_401_when_an_issuer_is_configured(
    database_url: str,
) -> None:
    settings = build_settings(database_url, auth_issuer="https://idp.example.com")
    without_issuer = jwt.encode(_claims(settings), settings.jwt_secret, "HS256")
    with_issuer = jwt.encode(
        _claims(settings, iss="https://idp.example.com"), settings.jwt_secret, "HS256"
    )
    async with running_app(settings) as (_, client):
        refused = await client.get(ADMIN_ROUTE, headers=bearer(without_issuer))
        assert refused.status_code == 401
        assert "iss" in refused.json()["detail"]
        assert (await client.get(ADMIN_ROUTE, headers=bearer(with_issuer))).status_code == 200

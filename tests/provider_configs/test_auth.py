"""The caller of /config: a token verified once is reused only while valid and unrevoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from app.core.auth import Principal
from app.provider_configs.service import VerifiedTokens
from tests.conftest import TokenFactory, bearer
from tests.provider_configs.conftest import TENANT


def _principal(expires_at: datetime) -> Principal:
    return Principal(
        sub="alice", tenants=frozenset([TENANT]), roles=frozenset(), jti="j", expires_at=expires_at
    )


async def test_a_revoked_token_is_refused_after_it_was_used(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token([TENANT]))
    assert (await client.get(f"/config/{TENANT}", headers=headers)).status_code == 200
    assert (await client.post("/auth/revoke", headers=headers)).status_code == 200
    response = await client.get(f"/config/{TENANT}", headers=headers)
    assert response.status_code == 401


async def test_a_token_signed_with_another_key_is_refused(client: httpx.AsyncClient) -> None:
    forged = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiJ4IiwidGVuYW50cyI6WyJ0ZW5hbnQtYSJdLCJhdWQiOiJqdW5jdGlvbiIsImV4cCI6OTk5OTk5OTk5OX0."
        "c2lnbmF0dXJlLW5vdC12YWxpZA"
    )
    response = await client.get(f"/config/{TENANT}", headers=bearer(forged))
    assert response.status_code == 401


def test_an_expired_principal_is_not_reused() -> None:
    tokens = VerifiedTokens()
    tokens.add("Bearer old", _principal(datetime.now(UTC) - timedelta(seconds=1)))
    assert tokens.get("Bearer old") is None


def test_a_valid_principal_is_reused() -> None:
    tokens = VerifiedTokens()
    principal = _principal(datetime.now(UTC) + timedelta(minutes=5))
    tokens.add("Bearer fresh", principal)
    assert tokens.get("Bearer fresh") is principal

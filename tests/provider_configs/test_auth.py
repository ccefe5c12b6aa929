"""The caller of /config: a token verified once is reused only while valid and unrevoked."""

from __future__ import annotations

import httpx

from tests.conftest import TokenFactory, bearer
from tests.provider_configs.conftest import TENANT


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

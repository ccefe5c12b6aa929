"""api_key / api_secret: encrypted at rest, bound to the row, masked, revealed to services."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.crypto import DecryptionError, associated_data
from app.provider_configs.models import ProviderConfig
from app.state import app_state
from tests.conftest import TokenFactory, bearer
from tests.provider_configs.conftest import TENANT, find, history, post_config, provider

KEY = "sk-live-abcdefghijkl9876"
SECRET = "shh-secret-value-5555"


async def _stored(app: Any, name: str = "google") -> ProviderConfig:
    async with app_state(app).sessionmaker() as session:
        row = await session.scalar(
            select(ProviderConfig).where(ProviderConfig.provider_name == name)
        )
    assert row is not None
    return row


async def test_secrets_are_masked_in_the_write_response(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await post_config(
        client, editor, payment=[provider("google", api_key=KEY, api_secret=SECRET)]
    )
    google = find(response.json(), "payment", "google")
    assert google["api_key"] == "****9876"
    assert google["api_secret"] == "****5555"
    assert KEY not in response.text and SECRET not in response.text


async def test_secrets_are_stored_encrypted_and_bound_to_their_row(
    app: Any, client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    await post_config(client, editor, payment=[provider("other", api_key=KEY)])
    row, other = await _stored(app, "google"), await _stored(app, "other")
    assert row.api_key_encrypted and KEY not in row.api_key_encrypted
    keyring = app_state(app).keyring
    own = associated_data("provider_configs", "api_key", TENANT, row.id)
    assert keyring.decrypt(row.api_key_encrypted, own) == KEY
    moved = associated_data("provider_configs", "api_key", TENANT, other.id)
    with pytest.raises(DecryptionError):
        keyring.decrypt(row.api_key_encrypted, moved)


async def test_include_secrets_is_refused_without_the_service_role(
    client: httpx.AsyncClient, editor: dict, member: dict
) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    response = await client.get(f"/config/{TENANT}?include_secrets=true", headers=member)
    assert response.status_code == 403
    assert KEY not in response.text


async def test_include_secrets_reveals_them_to_a_service(
    client: httpx.AsyncClient, editor: dict, service_caller: dict
) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY, api_secret=SECRET)])
    response = await client.get(
        f"/config/{TENANT}?include_secrets=true&provider_type=payment", headers=service_caller
    )
    assert response.status_code == 200
    google = find(response.json(), "payment", "google")
    assert (google["api_key"], google["api_secret"]) == (KEY, SECRET)
    assert response.headers["cache-control"] == "no-store"


async def test_include_secrets_is_allowed_for_an_admin(
    client: httpx.AsyncClient, editor: dict, make_token: TokenFactory
) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    admin = bearer(make_token(["*"], roles=["admin"]))
    response = await client.get(f"/config/{TENANT}?include_secrets=true", headers=admin)
    assert find(response.json(), "payment", "google")["api_key"] == KEY


async def test_posting_the_masked_value_back_keeps_the_secret(
    client: httpx.AsyncClient, editor: dict, service_caller: dict
) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    response = await post_config(
        client, editor, payment=[provider("google", api_key="****9876", config_data={"a": 1})]
    )
    assert response.status_code == 200
    revealed = await client.get(f"/config/{TENANT}?include_secrets=true", headers=service_caller)
    assert find(revealed.json(), "payment", "google")["api_key"] == KEY


async def test_a_masked_value_that_is_not_the_current_one_is_a_422(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    response = await post_config(client, editor, payment=[provider("google", api_key="****0000")])
    assert response.status_code == 422
    assert "api_key" in response.json()["detail"]


async def test_sending_the_same_secret_again_changes_nothing(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    assert len(await history(client, editor)) == 1


async def test_a_null_api_key_removes_it(client: httpx.AsyncClient, editor: dict) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    response = await post_config(client, editor, payment=[provider("google", api_key=None)])
    assert find(response.json(), "payment", "google")["api_key"] is None
    assert (await history(client, editor))[0]["change_type"] == "updated"


async def test_history_masks_secrets(client: httpx.AsyncClient, editor: dict) -> None:
    await post_config(client, editor, payment=[provider("google", api_key=KEY)])
    response = await client.get(f"/config/{TENANT}/history", headers=editor)
    assert response.json()["items"][0]["snapshot"]["api_key"] == "****9876"
    assert KEY not in response.text
    assert "encrypted" not in response.text


async def test_secrets_never_reach_the_logs(
    client: httpx.AsyncClient, editor: dict, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await post_config(client, editor, payment=[provider("google", api_key=KEY, api_secret=SECRET)])
    await client.get(f"/config/{TENANT}", headers=editor)
    assert KEY not in caplog.text and SECRET not in caplog.text


async def test_include_secrets_with_a_ciphertext_moved_from_another_row_is_a_409(
    app: Any, client: httpx.AsyncClient, editor: dict, service_caller: dict
) -> None:
    await post_config(
        client, editor, payment=[provider("google", api_key=KEY), provider("stripe", api_key=KEY)]
    )
    google = await _stored(app, "google")
    async with app_state(app).sessionmaker() as session, session.begin():
        stripe = await session.scalar(
            select(ProviderConfig).where(ProviderConfig.provider_name == "stripe")
        )
        assert stripe is not None
        stripe.api_key_encrypted = google.api_key_encrypted

    response = await client.get(f"/config/{TENANT}?include_secrets=true", headers=service_caller)

    assert response.status_code == 409
    assert response.json()["error"] == "secret_undecryptable"
    assert response.json()["provider_name"] == "stripe"
    assert KEY not in response.text

"""Input PostgreSQL cannot store or a JSON reader cannot parse is a 422 that changes nothing."""

from __future__ import annotations

import base64

import httpx

from tests.conftest import TokenFactory, bearer
from tests.provider_configs.conftest import TENANT, history, post_config, provider


async def _config_id(client: httpx.AsyncClient, editor: dict) -> str:
    response = await post_config(client, editor, map=[provider("osm")])
    assert response.status_code == 200, response.text
    config_id: str = response.json()["map_providers"][0]["id"]
    return config_id


async def test_nul_character_in_provider_name_is_a_422(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await post_config(client, editor, map=[provider("os\u0000m")])
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "map_providers[0].provider_name"
    assert await history(client, editor) == []


async def test_nul_character_inside_config_data_is_a_422(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await post_config(
        client, editor, map=[provider("osm", config_data={"k": "a\u0000"})]
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "map_providers[0].config_data"


async def test_nan_in_config_data_is_a_422_and_the_document_stays_valid_json(
    client: httpx.AsyncClient, editor: dict
) -> None:
    body = b'{"map_providers":[{"provider_name":"osm","config_data":{"zoom":NaN}}]}'
    response = await client.post(
        f"/config/{TENANT}", content=body, headers={**editor, "content-type": "application/json"}
    )
    assert response.status_code == 422
    document = await client.get(f"/config/{TENANT}", headers=editor)
    assert document.json()["source"] == "default"


async def test_lone_surrogate_in_config_data_is_a_422_and_history_still_reads(
    client: httpx.AsyncClient, editor: dict
) -> None:
    body = b'{"map_providers":[{"provider_name":"osm","config_data":{"x":"\\ud800"}}]}'
    response = await client.post(
        f"/config/{TENANT}", content=body, headers={**editor, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert await history(client, editor) == []


async def test_nul_character_in_change_reason_is_a_422(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await client.post(
        f"/config/{TENANT}",
        json={"map_providers": [provider("osm")], "change_reason": "why\u0000"},
        headers=editor,
    )
    assert response.status_code == 422


async def test_nul_character_in_history_filters_is_a_422(
    client: httpx.AsyncClient, editor: dict
) -> None:
    for name in ("provider_name", "config_id"):
        response = await client.get(
            f"/config/{TENANT}/history", params={name: "a\x00b"}, headers=editor
        )
        assert response.status_code == 422, name


async def test_nul_character_in_delete_filters_is_a_422(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await _config_id(client, editor)
    response = await client.request(
        "DELETE",
        f"/config/{TENANT}",
        params={"provider_name": "osm\x00", "change_reason": "cleanup"},
        headers=editor,
    )
    assert response.status_code == 422
    assert len(await history(client, editor)) == 1


async def test_history_cursor_beyond_64_bits_is_a_400(
    client: httpx.AsyncClient, editor: dict
) -> None:
    cursor = base64.urlsafe_b64encode(b"v1:99999999999999999999999").decode().rstrip("=")
    response = await client.get(
        f"/config/{TENANT}/history", params={"cursor": cursor}, headers=editor
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cursor"


async def test_rollback_to_a_version_beyond_32_bits_is_a_422(
    client: httpx.AsyncClient, editor: dict
) -> None:
    config_id = await _config_id(client, editor)
    response = await client.post(
        f"/config/{TENANT}/rollback",
        json={"config_id": config_id, "version": 2**40, "reason": "r"},
        headers=editor,
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "version"


async def test_expected_version_beyond_32_bits_is_a_422(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await post_config(client, editor, map=[provider("osm", expected_version=2**40)])
    assert response.status_code == 422


async def test_a_caller_with_a_very_long_sub_can_write(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    caller = bearer(make_token(tenants=[TENANT], roles=["service"], sub="s" * 400))
    response = await post_config(client, caller, map=[provider("osm")])
    assert response.status_code == 200, response.text
    assert (await history(client, caller))[0]["changed_by"] == "s" * 255

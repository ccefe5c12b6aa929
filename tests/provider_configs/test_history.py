"""GET /config/{tenant_id}/history: filters, newest first, cursor pagination, a capped limit."""

from __future__ import annotations

import httpx

from tests.conftest import TokenFactory, bearer
from tests.provider_configs.conftest import TENANT, history, post_config, provider


async def test_history_is_newest_first(client: httpx.AsyncClient, editor: dict) -> None:
    for value in range(3):
        await post_config(client, editor, map=[provider("google", config_data={"v": value})])
    items = await history(client, editor)
    assert [i["version"] for i in items] == [3, 2, 1]
    assert items[0]["snapshot"]["config_data"] == {"v": 2}
    assert set(items[0]) == {
        "config_id",
        "version",
        "change_type",
        "changed_at",
        "changed_by",
        "change_reason",
        "source_version",
        "snapshot",
        "diff",
    }


async def test_history_filters_by_type_name_and_config_id(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await post_config(
        client, editor, map=[provider("google"), provider("mapbox")], sms=[provider("twilio")]
    )
    mapbox_id = next(
        p["id"] for p in response.json()["map_providers"] if p["provider_name"] == "mapbox"
    )
    assert len(await history(client, editor, provider_type="map")) == 2
    by_name = await history(client, editor, provider_name="twilio")
    assert [i["snapshot"]["provider_name"] for i in by_name] == ["twilio"]
    by_id = await history(client, editor, config_id=mapbox_id)
    assert [i["config_id"] for i in by_id] == [mapbox_id]


async def test_history_pages_with_a_cursor(client: httpx.AsyncClient, editor: dict) -> None:
    for value in range(5):
        await post_config(client, editor, map=[provider("google", config_data={"v": value})])
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/config/{TENANT}/history", params=params, headers=editor)).json()
        seen += [i["version"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]


async def test_history_limit_is_capped(client: httpx.AsyncClient, editor: dict) -> None:
    # Five posts: one may carry at most 50 providers of a type.
    for start in range(0, 205, 50):
        names = [f"p{i:03d}" for i in range(start, min(start + 50, 205))]
        response = await post_config(client, editor, map=[provider(name) for name in names])
        assert response.status_code == 200
    page = (await client.get(f"/config/{TENANT}/history?limit=1000", headers=editor)).json()
    assert len(page["items"]) == 200
    assert page["next_cursor"] is not None


async def test_a_bad_cursor_is_a_400(client: httpx.AsyncClient, editor: dict) -> None:
    response = await client.get(f"/config/{TENANT}/history?cursor=garbage!", headers=editor)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cursor"


async def test_a_zero_limit_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    response = await client.get(f"/config/{TENANT}/history?limit=0", headers=editor)
    assert response.status_code == 422


async def test_another_tenants_config_id_is_a_404(
    client: httpx.AsyncClient, editor: dict, make_token: TokenFactory
) -> None:
    response = await post_config(client, editor, map=[provider("google")])
    config_id = response.json()["map_providers"][0]["id"]
    other = bearer(make_token(["tenant-b"]))
    found = await client.get(f"/config/tenant-b/history?config_id={config_id}", headers=other)
    assert found.status_code == 404


async def test_history_of_another_tenant_is_a_403(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    other = bearer(make_token(["tenant-b"]))
    assert (await client.get(f"/config/{TENANT}/history", headers=other)).status_code == 403

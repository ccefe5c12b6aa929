"""Concurrent writers: gapless, unique versions and nothing lost."""

from __future__ import annotations

import asyncio

import httpx

from tests.provider_configs.conftest import TENANT, find, history, post_config, provider

WRITERS = 50


async def test_concurrent_writers_to_one_config_get_gapless_versions(
    client: httpx.AsyncClient, editor: dict
) -> None:
    responses = await asyncio.gather(
        *(
            post_config(client, editor, map=[provider("google", config_data={"writer": i})])
            for i in range(WRITERS)
        )
    )
    assert [r.status_code for r in responses] == [200] * WRITERS
    items = await history(client, editor, limit=200)
    assert sorted(i["version"] for i in items) == list(range(1, WRITERS + 1))
    assert sorted(i["snapshot"]["config_data"]["writer"] for i in items) == list(range(WRITERS))
    assert [i["change_type"] for i in items].count("created") == 1
    current = find((await client.get(f"/config/{TENANT}", headers=editor)).json(), "map", "google")
    assert current["version"] == WRITERS
    assert current["config_data"] == items[0]["snapshot"]["config_data"]


async def test_concurrent_creates_of_one_name_let_exactly_one_win(
    client: httpx.AsyncClient, editor: dict
) -> None:
    responses = await asyncio.gather(
        *(
            post_config(
                client, editor, sms=[provider("twilio", config_data={"n": i}, expected_version=0)]
            )
            for i in range(10)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 9
    assert len(await history(client, editor)) == 1


async def test_concurrent_writers_to_different_configs_lose_nothing(
    client: httpx.AsyncClient, editor: dict
) -> None:
    responses = await asyncio.gather(
        *(post_config(client, editor, weather=[provider(f"w{i:02d}")]) for i in range(20))
    )
    assert {r.status_code for r in responses} == {200}
    document = (await client.get(f"/config/{TENANT}", headers=editor)).json()
    assert len(document["weather_providers"]) == 20

"""The two-tier cache: warm reads skip the database, writes reach every replica, Redis may die."""

from __future__ import annotations

import asyncio
import re
from contextlib import AbstractContextManager
from typing import Any

import httpx
import redis.asyncio as aioredis

from app.core.config import Settings
from app.provider_configs.cache import ConfigCache
from app.provider_configs.rendering import RenderedDocument
from app.state import app_state
from tests.conftest import (
    REDIS_URL,
    TokenFactory,
    bearer,
    build_settings,
    postgres_only,
    recorded_statements,
    running_app,
    while_coherent,
)
from tests.provider_configs.conftest import TENANT, find, post_config, provider


def config_selects(app: Any) -> AbstractContextManager[list[str]]:
    """Statements that read provider_configs, as the database driver receives them."""
    return recorded_statements(
        app,
        lambda sql: sql.lstrip().upper().startswith("SELECT") and "FROM provider_configs" in sql,
    )


async def test_a_warm_read_does_not_touch_the_database(
    app: Any, client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])

    async def warm_reads() -> None:
        await client.get(f"/config/{TENANT}", headers=editor)
        with config_selects(app) as selects:
            for _ in range(5):
                response = await client.get(f"/config/{TENANT}", headers=editor)
                assert response.status_code == 200
        assert selects == []

    await while_coherent([app], warm_reads)


async def _cache_operations(client: httpx.AsyncClient, tier: str, result: str) -> float:
    text = (await client.get("/metrics")).text
    pattern = rf'^junction_cache_operations_total{{result="{result}",tier="{tier}"}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no {tier} {result} count in /metrics"
    return float(found.group(1))


async def test_cache_metrics_count_the_hits_and_misses_of_reads(
    app: Any, client: httpx.AsyncClient, editor: dict
) -> None:
    writes = iter(range(100))

    async def cold_then_warm_reads() -> None:
        # A write first: the next read is cold again, whichever attempt this is.
        await post_config(client, editor, map=[provider("google", config_data={"n": next(writes)})])
        hits = await _cache_operations(client, "local", "hit")
        misses = await _cache_operations(client, "local", "miss")
        await client.get(f"/config/{TENANT}", headers=editor)  # cold: a local miss
        for _ in range(3):
            await client.get(f"/config/{TENANT}", headers=editor)
        assert await _cache_operations(client, "local", "miss") == misses + 1
        assert await _cache_operations(client, "local", "hit") == hits + 3

    await while_coherent([app], cold_then_warm_reads)


async def test_concurrent_cold_reads_cost_one_database_read(
    app: Any, client: httpx.AsyncClient, editor: dict
) -> None:
    writes = iter(range(100))

    async def concurrent_cold_reads() -> None:
        await post_config(client, editor, map=[provider("google", config_data={"n": next(writes)})])
        with config_selects(app) as selects:
            responses = await asyncio.gather(
                *(client.get(f"/config/{TENANT}", headers=editor) for _ in range(30))
            )
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert len(selects) == 1

    await while_coherent([app], concurrent_cold_reads)


async def test_a_write_is_visible_on_the_next_read(client: httpx.AsyncClient, editor: dict) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    for value in range(2, 6):
        await client.get(f"/config/{TENANT}?provider_type=map", headers=editor)
        await client.get(f"/config/{TENANT}", headers=editor)
        await post_config(client, editor, map=[provider("google", config_data={"v": value})])
        typed = (await client.get(f"/config/{TENANT}?provider_type=map", headers=editor)).json()
        whole = (await client.get(f"/config/{TENANT}", headers=editor)).json()
        assert find(typed, "map", "google")["config_data"] == {"v": value}
        assert find(whole, "map", "google")["config_data"] == {"v": value}


async def test_delete_and_rollback_invalidate_the_cache(
    client: httpx.AsyncClient, editor: dict
) -> None:
    created = await post_config(client, editor, map=[provider("google")])
    config_id = created.json()["map_providers"][0]["id"]
    await client.get(f"/config/{TENANT}", headers=editor)
    await client.delete(f"/config/{TENANT}", params={"change_reason": "x"}, headers=editor)
    assert (await client.get(f"/config/{TENANT}", headers=editor)).json()["map_providers"] == []
    await client.post(
        f"/config/{TENANT}/rollback",
        json={"config_id": config_id, "version": 1, "reason": "undo"},
        headers=editor,
    )
    document = (await client.get(f"/config/{TENANT}", headers=editor)).json()
    assert find(document, "map", "google")["version"] == 3


async def test_with_the_cache_disabled_every_read_goes_to_the_database(
    settings: Settings, make_token: TokenFactory
) -> None:
    headers = bearer(make_token([TENANT], roles=["service"]))
    uncached = build_settings(settings.database_url, provider_config_cache_enabled=False)
    async with running_app(uncached) as (app, client):
        await post_config(client, headers, map=[provider("google")])
        with config_selects(app) as selects:
            for _ in range(3):
                assert (await client.get(f"/config/{TENANT}", headers=headers)).status_code == 200
    assert len(selects) == 3


async def test_with_redis_unreachable_reads_and_writes_still_work(
    settings: Settings, make_token: TokenFactory
) -> None:
    headers = bearer(make_token([TENANT], roles=["service"]))
    dead = build_settings(
        settings.database_url, redis_url="redis://127.0.0.1:1/0", cache_socket_timeout_s=0.05
    )
    async with running_app(dead) as (_, client):
        written = await post_config(client, headers, map=[provider("google", config_data={"v": 1})])
        assert written.status_code == 200
        for value in (2, 3):
            await post_config(client, headers, map=[provider("google", config_data={"v": value})])
            document = (await client.get(f"/config/{TENANT}", headers=headers)).json()
            assert find(document, "map", "google")["config_data"] == {"v": value}
        health = (await client.get("/api/v1/health")).json()
    assert health["status"] == "degraded"


@postgres_only
async def test_a_shared_entry_without_a_tag_is_read_again_from_the_database(
    app: Any, client: httpx.AsyncClient, editor: dict
) -> None:
    # What a replica of the previous release stored: the body alone, no entity tag before it.
    redis = aioredis.Redis.from_url(REDIS_URL)
    writes = iter(range(100))

    async def read_over_an_untagged_entry() -> None:
        twilio = provider("twilio", config_data={"n": next(writes)})
        await post_config(client, editor, sms=[twilio])
        await redis.set(f"provider_config:{TENANT}:sms", b'{"tenant_id":"stale"}', ex=300)
        response = await client.get(f"/config/{TENANT}?provider_type=sms", headers=editor)
        assert response.status_code == 200
        assert response.json()["tenant_id"] == TENANT
        assert response.headers["etag"].startswith('"sms.')
        stored = await redis.get(f"provider_config:{TENANT}:sms")
        assert stored is not None and stored.startswith(b'"sms.')

    try:
        await while_coherent([app], read_over_an_untagged_entry)
    finally:
        await redis.aclose()


@postgres_only
async def test_a_typed_read_fills_the_redis_key_and_a_write_deletes_it(
    app: Any, client: httpx.AsyncClient, editor: dict
) -> None:
    redis = aioredis.Redis.from_url(REDIS_URL)
    key = f"provider_config:{TENANT}:sms"

    async def fill_then_write() -> None:
        await post_config(client, editor, sms=[provider("twilio")])
        await client.get(f"/config/{TENANT}?provider_type=sms", headers=editor)
        assert await redis.exists(key)
        assert 0 < await redis.ttl(key) <= 300
        await post_config(client, editor, sms=[provider("twilio", enabled=False)])
        assert not await redis.exists(key)

    try:
        await while_coherent([app], fill_then_write)
    finally:
        await redis.aclose()


@postgres_only
async def test_a_write_through_one_instance_is_visible_through_another(
    settings: Settings, make_token: TokenFactory
) -> None:
    headers = bearer(make_token([TENANT], roles=["service"]))
    async with running_app(settings) as (_, first), running_app(settings) as (_, second):
        await post_config(first, headers, map=[provider("google", config_data={"v": 0})])
        for value in range(1, 11):
            writer, reader = (first, second) if value % 2 else (second, first)
            # Both replicas hold the document in their local tier before the write.
            await reader.get(f"/config/{TENANT}", headers=headers)
            await writer.get(f"/config/{TENANT}", headers=headers)
            await post_config(writer, headers, map=[provider("google", config_data={"v": value})])
            document = (await reader.get(f"/config/{TENANT}", headers=headers)).json()
            assert find(document, "map", "google")["config_data"] == {"v": value}


@postgres_only
async def test_the_second_instance_reads_a_warm_document_from_redis(
    settings: Settings, make_token: TokenFactory
) -> None:
    headers = bearer(make_token([TENANT], roles=["service"]))
    async with running_app(settings) as (app1, first), running_app(settings) as (app2, second):

        async def write_then_read_on_both() -> None:
            await post_config(first, headers, map=[provider("google")])
            await first.get(f"/config/{TENANT}", headers=headers)
            with config_selects(app2) as selects:
                response = await second.get(f"/config/{TENANT}", headers=headers)
            assert response.status_code == 200
            assert selects == []

        await while_coherent([app1, app2], write_then_read_on_both)


async def test_a_load_that_straddles_a_write_is_not_kept(app: Any) -> None:
    loads: list[str] = []
    release = asyncio.Event()

    async def loader(tenant_id: str, provider_type: str | None) -> RenderedDocument:
        loads.append(tenant_id)
        if len(loads) == 1:
            await release.wait()  # still reading the old state when the write commits
            return RenderedDocument(b'{"state":"old"}', '"old"')
        return RenderedDocument(b'{"state":"new"}', '"new"')

    cache = ConfigCache(app_state(app).cache, loader, ttl_s=300)
    straddling = asyncio.create_task(cache.get(TENANT, "map"))
    while not loads:
        await asyncio.sleep(0)
    await cache.invalidate(TENANT, ["map"])
    release.set()
    assert (await straddling).body == b'{"state":"old"}'
    assert (await cache.get(TENANT, "map")).body == b'{"state":"new"}'
    assert (await cache.get(TENANT, "map")).body == b'{"state":"new"}'
    assert len(loads) == 2

"""Once a write is answered, no replica serves what it replaced: with Redis stalled, with a replica
paused behind its bus, while Redis is away. Each test runs its own `redis-server`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from typing import Any

import httpx
import redis.asyncio as aioredis

from app.state import app_state
from tests.conftest import TokenFactory, bearer, build_settings, postgres_only, running_app
from tests.replica_server import ReplicaServer

pytestmark = postgres_only

TENANT = "tenant-a"


async def _write(client: httpx.AsyncClient, headers: dict[str, str], value: int) -> int:
    body = {"map_providers": [{"provider_name": "google", "config_data": {"value": value}}]}
    response = await client.post(f"/config/{TENANT}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["map_providers"][0]["version"])


async def _version(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    response = await client.get(f"/config/{TENANT}", headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["map_providers"][0]["version"])


async def _until(condition: Any, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_write_during_a_redis_stall_is_never_read_stale_through_another_replica(
    database_url: str,
    redis_server: tuple[subprocess.Popen[bytes], int],
    make_token: TokenFactory,
) -> None:
    process, port = redis_server
    settings = build_settings(database_url, redis_url=f"redis://127.0.0.1:{port}/0")
    headers = bearer(make_token(tenants=[TENANT], roles=["service"]))
    async with running_app(settings) as (_, writer), running_app(settings) as (_, reader):
        assert await _write(writer, headers, 1) == 1
        assert await _version(reader, headers) == 1  # the reader holds version 1 locally
        assert await _version(reader, headers) == 1
        process.send_signal(signal.SIGSTOP)
        try:
            assert await _write(writer, headers, 2) == 2  # answered although Redis is stalled
            seen = [await _version(reader, headers) for _ in range(5)]
            await asyncio.sleep(1.5)
        finally:
            process.send_signal(signal.SIGCONT)
        # After the stall, for longer than the replay of the writer's backlog takes.
        for _ in range(40):
            seen.append(await _version(reader, headers))
            seen.append(await _version(writer, headers))
            await asyncio.sleep(0.2)
    assert set(seen) == {2}, seen


async def test_a_paused_replica_does_not_serve_what_a_write_replaced(
    database_url: str,
    redis_server: tuple[subprocess.Popen[bytes], int],
    make_token: TokenFactory,
) -> None:
    _, port = redis_server
    redis_url = f"redis://127.0.0.1:{port}/0"
    headers = bearer(make_token(tenants=[TENANT], roles=["service"]))
    writer = ReplicaServer(database_url, redis_url)
    lagging = ReplicaServer(database_url, redis_url)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            first = await client.post(
                f"{writer.base_url}/config/{TENANT}",
                json={"map_providers": [{"provider_name": "google", "config_data": {"v": 1}}]},
                headers=headers,
            )
            assert first.status_code == 200
            for _ in range(3):  # warm: version 1 in the lagging replica's local tier
                response = await client.get(f"{lagging.base_url}/config/{TENANT}", headers=headers)
                assert response.json()["map_providers"][0]["version"] == 1
            lagging.pause()
            try:
                # Another replica's invalidations (of other tenants) pile up in front of ours:
                # on resuming, the lagging replica works through them between requests.
                await _publish_backlog(port, 3000)
                # The writer waits for the paused replica's acknowledgement, gives up, answers.
                second = await client.post(
                    f"{writer.base_url}/config/{TENANT}",
                    json={"map_providers": [{"provider_name": "google", "config_data": {"v": 2}}]},
                    headers=headers,
                )
                assert second.json()["map_providers"][0]["version"] == 2
                # Sent while it is paused: it finds this request and the invalidation together.
                read = asyncio.create_task(
                    client.get(f"{lagging.base_url}/config/{TENANT}", headers=headers)
                )
                await asyncio.sleep(0.7)
            finally:
                lagging.resume()
            response = await read
    finally:
        writer.stop()
        lagging.stop()
    assert response.status_code == 200
    assert response.json()["map_providers"][0]["version"] == 2


async def _publish_backlog(port: int, count: int) -> None:
    client = aioredis.Redis(port=port)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for n in range(count):
                message = {"tenant_id": f"other-{n}", "types": ["map"], "nonce": f"n{n}"}
                pipe.publish("provider_config:invalidate:0", json.dumps(message))
            await pipe.execute()
    finally:
        await client.aclose()


async def test_health_says_recovering_until_the_local_tiers_are_trusted_again(
    database_url: str,
    redis_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = redis_server
    settings = build_settings(
        database_url, redis_url=f"redis://127.0.0.1:{port}/0", cache_breaker_reset_s=0.5
    )
    async with running_app(settings) as (app, client):
        assert (await client.get("/api/v1/health")).json()["checks"]["cache"] == "redis:ok"
        lapses_before = await _metric(client, "junction_cache_coherence_lapses_total")
        assert await _metric(client, "junction_cache_coherent") == 1
        process.send_signal(signal.SIGSTOP)
        try:
            await _until(lambda: _not_coherent(app))
            # An operator sees it: the gauge says the local tiers are not trusted.
            assert await _metric(client, "junction_cache_coherent") == 0
        finally:
            process.send_signal(signal.SIGCONT)
        checks: list[str] = []

        async def healthy() -> bool:
            checks.append((await client.get("/api/v1/health")).json()["checks"]["cache"])
            return checks[-1] == "redis:ok"

        await _until(healthy)
        # Trust regained: counted once as a lapse, and the gauge is back.
        assert await _metric(client, "junction_cache_coherence_lapses_total") == lapses_before + 1
        assert await _metric(client, "junction_cache_coherent") == 1
    # Redis answered pings again well before the grace ended: health said so honestly.
    assert "redis:recovering" in checks, checks


async def _metric(client: httpx.AsyncClient, name: str) -> float:
    """The value of an unlabelled sample in this process's /metrics."""
    text = (await client.get("/metrics")).text
    [value] = [line.split()[1] for line in text.splitlines() if line.split(" ")[0] == name]
    return float(value)


async def _not_coherent(app: Any) -> bool:
    return not app_state(app).cache.coherent


async def test_while_redis_is_away_a_read_does_not_join_a_load_that_began_before_a_write(
    database_url: str,
    redis_server: tuple[subprocess.Popen[bytes], int],
    make_token: TokenFactory,
) -> None:
    process, port = redis_server
    settings = build_settings(database_url, redis_url=f"redis://127.0.0.1:{port}/0")
    headers = bearer(make_token(tenants=[TENANT], roles=["service"]))
    async with running_app(settings) as (app, client):
        assert await _write(client, headers, 1) == 1
        process.kill()
        process.wait()
        await _until(lambda: _not_coherent(app))
        cache = app_state(app).provider_configs.cache
        loads_before = cache.database_loads
        # Two reads at once: each goes to the database itself (no single flight while this
        # process cannot hear invalidations), so neither can be handed an older load.
        versions = await asyncio.gather(_version(client, headers), _version(client, headers))
        assert cache.database_loads - loads_before == 2
        assert await _write(client, headers, 2) == 2
        assert await _version(client, headers) == 2
    assert versions == [1, 1]

"""The invalidation bus between replicas, over a real Redis: delivery, acks, failures."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from app.core.invalidation import InvalidationBus
from app.core.redis_cache import RedisCache
from app.provider_configs.cache import ConfigCache
from app.provider_configs.rendering import RenderedDocument
from tests.conftest import REDIS_URL


class Replica:
    """One process's view: its own Redis client, its bus, and what it was told."""

    def __init__(self, url: str, name: str = "test_bus") -> None:
        self.cache = RedisCache(url)
        self.received: list[dict[str, Any]] = []
        self.resets = 0
        self.bus = InvalidationBus(self.cache, name, self.received.append, self._reset)

    async def _reset(self) -> None:
        self.resets += 1


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def replicas(count: int, url: str = REDIS_URL) -> AsyncIterator[list[Replica]]:
    started = [Replica(url) for _ in range(count)]
    for replica in started:
        replica.bus.subscribe()
        await replica.cache.start()
    try:
        await _until(lambda: all(r.cache.bus_connected for r in started))
        yield started
    finally:
        for replica in started:
            await replica.cache.close()


async def test_a_broadcast_returns_once_every_other_replica_has_applied_it() -> None:
    async with replicas(3) as (writer, first, second):
        assert await writer.bus.broadcast({"ids": ["c1"]}) is True
        # No waiting here: the writer waited for both acknowledgements.
        assert first.received == [{"ids": ["c1"]}]
        assert second.received == [{"ids": ["c1"]}]
        assert writer.received == []  # the writer dropped its own entries before publishing


async def test_malformed_messages_are_ignored_and_the_bus_keeps_working() -> None:
    async with replicas(2) as (writer, reader):
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            for junk in ("not json", "[1, 2]", '{"no_nonce": true}'):
                await client.publish(reader.bus.channel, junk)
        finally:
            await client.aclose()
        assert await writer.bus.broadcast({"ids": ["c2"]}) is True
        assert reader.received == [{"ids": ["c2"]}]


async def test_what_could_not_be_published_reaches_the_others_once_redis_answers() -> None:
    async with replicas(2) as (writer, reader):
        breaker = writer.cache.breaker
        while not breaker.is_open:
            breaker.failure()  # this replica's Redis calls have been failing
        assert writer.bus.coherent is False
        assert await writer.bus.broadcast({"ids": ["late-1"]}) is False
        assert await writer.bus.broadcast({"ids": ["late-2"]}) is False
        assert reader.received == []
        breaker.success()
        assert await writer.bus.broadcast({"ids": ["now"]}) is True
        assert reader.received == [{"ids": ["late-1"]}, {"ids": ["late-2"]}, {"ids": ["now"]}]


async def test_too_many_unpublished_invalidations_become_one_reset() -> None:
    async with replicas(2) as (writer, reader):
        resets_before = reader.resets
        breaker = writer.cache.breaker
        while not breaker.is_open:
            breaker.failure()
        for n in range(300):
            await writer.bus.broadcast({"ids": [f"c{n}"]})
        breaker.success()
        await writer.bus.broadcast({"ids": ["after"]})
        await _until(lambda: reader.received == [{"ids": ["after"]}])
        assert reader.resets == resets_before + 1


async def test_a_replica_that_lost_its_subscription_is_not_coherent(
    redis_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = redis_server
    async with replicas(1, url=f"redis://127.0.0.1:{port}/0") as (replica,):
        assert replica.bus.coherent is True
        process.kill()
        process.wait()
        # No command of this replica failed, so its breaker is still closed; the lost
        # subscription alone makes its local entries untrusted.
        await _until(lambda: not replica.cache.bus_connected)
        assert replica.cache.available is True
        assert replica.bus.coherent is False


async def test_concurrent_replays_send_each_unpublished_invalidation_once() -> None:
    async with replicas(2) as (writer, reader):
        breaker = writer.cache.breaker
        while not breaker.is_open:
            breaker.failure()
        late = [{"ids": [f"late-{n}"]} for n in range(5)]
        for payload in late:
            assert await writer.bus.broadcast(payload) is False
        breaker.success()
        # Three call paths find Redis answering at once; each would replay the backlog.
        await asyncio.gather(
            writer.bus.broadcast({"ids": ["now-1"]}),
            writer.bus.broadcast({"ids": ["now-2"]}),
            writer.cache.ping(),
        )
        assert reader.received[:5] == late
        assert sorted(p["ids"][0] for p in reader.received[5:]) == ["now-1", "now-2"]


async def test_a_write_while_only_this_replicas_breaker_is_open_reaches_the_other_replica(
    redis_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    _, port = redis_server
    url = f"redis://127.0.0.1:{port}/0"
    database = {"document": b"v1"}

    async def load(tenant_id: str, provider_type: str | None) -> RenderedDocument:
        return RenderedDocument(database["document"], '"' + database["document"].decode() + '"')

    writer_redis = RedisCache(url, breaker_failures=1, breaker_reset_s=0.2)
    reader_redis = RedisCache(url)
    writer = ConfigCache(writer_redis, load, ttl_s=300)
    reader = ConfigCache(reader_redis, load, ttl_s=300)
    for cache, redis_cache in ((writer, writer_redis), (reader, reader_redis)):
        cache.subscribe()
        await redis_cache.start()
    try:
        await _until(lambda: writer_redis.bus_connected and reader_redis.bus_connected)
        # In the reader's local tier and Redis.
        assert (await reader.get("tenant", None)).body == b"v1"
        writer_redis.breaker.failure()  # this replica's Redis calls have been failing
        database["document"] = b"v2"
        await writer.invalidate("tenant", [])  # Redis cannot be told: kept in the backlog
        await asyncio.sleep(0.25)  # the breaker lets a trial call through
        # An ordinary read is the first call to find Redis answering: it replays the backlog.
        assert (await writer.get("tenant", None)).body == b"v2"
        deadline = asyncio.get_running_loop().time() + 5
        while (await reader.get("tenant", None)).body != b"v2":
            assert asyncio.get_running_loop().time() < deadline, "the reader kept the old version"
            await asyncio.sleep(0.01)
    finally:
        for cache, redis_cache in ((writer, writer_redis), (reader, reader_redis)):
            await cache.close()
            await redis_cache.close()

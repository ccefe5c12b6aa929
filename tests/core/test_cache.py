"""The cache: Redis behind a circuit breaker, the in-process fallback, and Redis dying mid-run."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from app.core.cache import CacheUnavailable, MemoryCache
from app.core.config import Settings
from app.core.redis_cache import RedisCache
from tests.conftest import (
    REDIS_URL,
    TokenFactory,
    bearer,
    build_settings,
    free_port,
    postgres_only,
    running_app,
)


async def test_memory_cache_expires_entries() -> None:
    cache = MemoryCache()
    await cache.set("k", "v", ttl_s=0.05)
    assert await cache.get("k") == b"v"
    await asyncio.sleep(0.08)
    assert await cache.get("k") is None


async def test_memory_cache_lock_is_released_only_by_its_owner() -> None:
    cache = MemoryCache()
    assert await cache.acquire_lock("lock:x", "owner-1", ttl_s=5)
    assert not await cache.acquire_lock("lock:x", "owner-2", ttl_s=5)
    assert not await cache.release_lock("lock:x", "owner-2")
    assert await cache.release_lock("lock:x", "owner-1")
    assert await cache.acquire_lock("lock:x", "owner-2", ttl_s=5)


async def test_redis_lock_is_released_only_by_its_owner() -> None:
    cache = RedisCache(REDIS_URL)
    try:
        await cache.delete("lock:test")
        assert await cache.acquire_lock("lock:test", "owner-1", ttl_s=5)
        assert not await cache.acquire_lock("lock:test", "owner-2", ttl_s=5)
        assert not await cache.release_lock("lock:test", "owner-2")
        assert await cache.release_lock("lock:test", "owner-1")
    finally:
        await cache.delete("lock:test")
        await cache.close()


async def test_redis_round_trip_and_ttl() -> None:
    cache = RedisCache(REDIS_URL)
    try:
        await cache.set("cache:test", b"value", ttl_s=10)
        assert await cache.get("cache:test") == b"value"
        await cache.delete("cache:test")
        assert await cache.get("cache:test") is None
    finally:
        await cache.close()


async def test_an_unreachable_redis_is_a_miss_and_opens_the_breaker() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", breaker_failures=2, breaker_reset_s=60)
    try:
        assert await cache.get("a") is None
        assert await cache.get("b") is None
        assert cache.available is False
        assert cache.stats.breaker_opened == 1
        errors_when_opened = cache.stats.errors
        # While open, calls do not touch the network at all.
        assert await cache.get("c") is None
        assert cache.stats.errors == errors_when_opened
        with pytest.raises(CacheUnavailable):
            await cache.acquire_lock("lock:x", "me", ttl_s=1)
    finally:
        await cache.close()


async def test_redis_dying_mid_run_degrades_health_and_requests_still_work(
    database_url: str,
    redis_server: tuple[subprocess.Popen[bytes], int],
    make_token: TokenFactory,
) -> None:
    process, port = redis_server
    settings: Settings = build_settings(
        database_url, redis_url=f"redis://127.0.0.1:{port}/0", cache_breaker_reset_s=60
    )
    token = make_token(roles=["admin"])
    async with running_app(settings) as (_, client):
        healthy = await client.get("/api/v1/health")
        assert healthy.json()["status"] == "ok"
        process.kill()
        process.wait()
        degraded = await client.get("/api/v1/health")
        assert degraded.status_code == 200
        assert degraded.json()["status"] == "degraded"
        assert degraded.json()["checks"]["cache"] == "redis:unavailable"
        response = await client.get("/api/admin/workspaces/tenant-a/usage", headers=bearer(token))
        assert response.status_code == 200


async def test_memory_cache_lock_is_extended_only_by_its_owner() -> None:
    cache = MemoryCache()
    assert await cache.acquire_lock("lock:e", "owner-1", ttl_s=0.05)
    assert not await cache.extend_lock("lock:e", "owner-2", ttl_s=5)
    assert await cache.extend_lock("lock:e", "owner-1", ttl_s=5)
    await asyncio.sleep(0.08)
    assert not await cache.acquire_lock("lock:e", "owner-2", ttl_s=5)  # still owner-1's


@postgres_only
async def test_redis_lock_is_extended_only_by_its_owner() -> None:
    cache = RedisCache(REDIS_URL)
    try:
        assert await cache.acquire_lock("lock:e", "owner-1", ttl_s=0.2)
        assert not await cache.extend_lock("lock:e", "owner-2", ttl_s=5)
        assert await cache.extend_lock("lock:e", "owner-1", ttl_s=5)
        await asyncio.sleep(0.3)
        assert not await cache.acquire_lock("lock:e", "owner-2", ttl_s=5)
    finally:
        await cache.close()

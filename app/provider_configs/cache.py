"""The two-tier configuration cache: a per-process dict in front of Redis, coherent across replicas.

Entries are the response bodies, already serialized, so a warm read is a dict lookup.

Coherence, in order, after a write commits (see `invalidate`):
1. in one Redis transaction the writer bumps the tenant's generation, deletes the shared entries
   and publishes an invalidation on the domain's `InvalidationBus`;
2. it drops its own local entries; every other replica drops its own and acknowledges;
3. the writer waits for those acknowledgements (bounded by a short timeout), so once its response
   is sent no replica still holds the old document.
A reader that loaded from the database while a write committed must not store what it read: the
shared fill is a compare-and-set on the generation read before loading, and a local fill is dropped
when an invalidation arrived meanwhile (the epoch moved). With Redis unreachable the local tier is
bypassed (it could not hear invalidations) and reads go to the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from app.core.cache import Cache, RedisCache
from app.core.invalidation import InvalidationBus

ALL_TYPES = "all"  # the key suffix of the whole document (not a provider type)

Loader = Callable[[str, str | None], Awaitable[bytes]]
LocalKey = tuple[str, str | None]

# Store the document only if the generation is still the one read before the database load.
_FILL_IF_GENERATION = """
local g = redis.call('get', KEYS[2])
if (g == false and ARGV[1] == '') or g == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


def cache_key(tenant_id: str, provider_type: str | None) -> str:
    return f"provider_config:{tenant_id}:{provider_type or ALL_TYPES}"


def generation_key(tenant_id: str) -> str:
    return f"provider_config_generation:{tenant_id}"


@dataclass(slots=True)
class _Entry:
    body: bytes
    expires_at: float


@dataclass
class CacheCounters:
    local_hits: int = 0
    shared_hits: int = 0
    database_loads: int = 0


class ConfigCache:
    def __init__(
        self,
        cache: Cache,
        loader: Loader,
        *,
        ttl_s: float,
        enabled: bool = True,
        ack_timeout_s: float = 0.5,
        max_local_entries: int = 10_000,
    ) -> None:
        self.enabled = enabled
        self.ttl_s = ttl_s
        self.counters = CacheCounters()
        self._cache = cache
        self._loader = loader
        # Without Redis the shared cache is this process's memory: the local tier is enough.
        self._redis = cache if isinstance(cache, RedisCache) else None
        self._max_local_entries = max_local_entries
        self._local: dict[LocalKey, _Entry] = {}
        self._inflight: dict[LocalKey, asyncio.Task[bytes]] = {}
        self._epoch = 0
        self._fill_script = (
            self._redis.client.register_script(_FILL_IF_GENERATION) if self._redis else None
        )
        self._bus = InvalidationBus(
            cache, "provider_config", self._on_invalidation, self.clear, ack_timeout_s=ack_timeout_s
        )

    def subscribe(self) -> None:
        """Join the invalidation bus; called from the domain's lifespan, before the cache starts."""
        if self.enabled:
            self._bus.subscribe()

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        self._inflight.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # --- reads ------------------------------------------------------------------------------
    async def get(self, tenant_id: str, provider_type: str | None) -> bytes:
        """The serialized document: local tier, then Redis, then one database load per key."""
        if not self.enabled:
            return await self._loader(tenant_id, provider_type)
        key = (tenant_id, provider_type)
        entry = self._local.get(key)
        if entry is not None and entry.expires_at > time.monotonic() and self._bus.coherent:
            self.counters.local_hits += 1
            return entry.body
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fill(key, self._epoch))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: a reader that gives up does not cancel the load the others are waiting for.
        return await asyncio.shield(task)

    def _forget(self, key: LocalKey, task: asyncio.Task[bytes]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, raised in every waiter

    async def _fill(self, key: LocalKey, epoch: int) -> bytes:
        tenant_id, provider_type = key
        shared_ok = self._redis is None
        generation = ""
        if self._redis is not None:
            body, generation, shared_ok = await self._shared_read(tenant_id, provider_type)
            if body is not None:
                self.counters.shared_hits += 1
                self._store_local(key, body, epoch)
                return body
        self.counters.database_loads += 1
        body = await self._loader(tenant_id, provider_type)
        if self._redis is not None and shared_ok:
            await self._shared_fill(tenant_id, provider_type, generation, body)
        if shared_ok:
            self._store_local(key, body, epoch)
        return body

    def _store_local(self, key: LocalKey, body: bytes, epoch: int) -> None:
        if epoch != self._epoch:
            return  # an invalidation arrived while loading: what we hold may predate it
        if len(self._local) >= self._max_local_entries:
            self._local.pop(next(iter(self._local)))
        self._local[key] = _Entry(body, time.monotonic() + self.ttl_s)

    async def _shared_read(
        self, tenant_id: str, provider_type: str | None
    ) -> tuple[bytes | None, str, bool]:
        redis = self._redis
        assert redis is not None
        if not redis.available:
            return None, "", False
        try:
            body, generation = await redis.client.mget(
                cache_key(tenant_id, provider_type), generation_key(tenant_id)
            )
        except (RedisError, OSError) as exc:
            self._bus.failed(exc)
            return None, "", False
        redis.breaker.success()
        return (
            body.encode() if isinstance(body, str) else body,
            generation.decode() if isinstance(generation, bytes) else str(generation or ""),
            True,
        )

    async def _shared_fill(
        self, tenant_id: str, provider_type: str | None, generation: str, body: bytes
    ) -> None:
        assert self._fill_script is not None
        try:
            await self._fill_script(
                keys=[cache_key(tenant_id, provider_type), generation_key(tenant_id)],
                args=[generation, body, int(self.ttl_s * 1000)],
            )
        except (RedisError, OSError) as exc:
            self._bus.failed(exc)

    # --- invalidation -----------------------------------------------------------------------
    async def clear(self) -> None:
        """Drop every local entry (the bus reconnected: invalidations may have been missed)."""
        self._local.clear()
        self._inflight.clear()
        self._epoch += 1

    def _drop_local(self, tenant_id: str, provider_types: Iterable[str]) -> None:
        self._epoch += 1
        for key in [(tenant_id, None), *((tenant_id, t) for t in provider_types)]:
            self._local.pop(key, None)
            self._inflight.pop(key, None)

    async def invalidate(self, tenant_id: str, provider_types: Iterable[str]) -> None:
        """After a commit: no replica serves the tenant's old document once this returns."""
        if not self.enabled:
            return
        types = sorted(set(provider_types))
        redis = self._redis
        if redis is None:
            self._drop_local(tenant_id, types)
            return
        keys = [cache_key(tenant_id, None), *(cache_key(tenant_id, t) for t in types)]
        generation = generation_key(tenant_id)

        def shared_entries(pipe: Pipeline) -> None:
            # In the same round trip as the announcement: new generation, shared entries gone.
            pipe.incr(generation)
            pipe.pexpire(generation, int(self.ttl_s * 1000) * 2)
            pipe.delete(*keys)

        told = await self._bus.broadcast(
            {"tenant_id": tenant_id, "types": types},
            within=shared_entries,
            # After the shared delete: a local fill that read Redis before it is discarded.
            published=lambda: self._drop_local(tenant_id, types),
        )
        if not told:
            await redis.delete(*keys)  # queued by the foundation, replayed once Redis answers
            self._drop_local(tenant_id, types)

    def _on_invalidation(self, payload: dict[str, Any]) -> None:
        """Another replica changed a tenant's configuration: drop what this one holds of it."""
        self._drop_local(str(payload["tenant_id"]), [str(t) for t in payload["types"]])

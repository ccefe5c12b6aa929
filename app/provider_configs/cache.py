"""The two-tier configuration cache: a per-process dict in front of Redis, coherent across replicas.

Entries are the response bodies, already serialized, with their entity tags (`RenderedDocument`),
so a warm read, and its 304, is a dict lookup.

Coherence, in order, after a write commits (see `invalidate`):
1. in one Redis transaction the writer bumps the tenant's generation, deletes the shared entries
   and publishes an invalidation on the domain's `InvalidationBus`;
2. it drops its own local entries; every other replica drops its own and acknowledges;
3. the writer waits for those acknowledgements (bounded by a short timeout), so once its response
   is sent no replica still holds the old document.
A reader that loaded from the database while a write committed must not store what it read: the
shared fill is a compare-and-set on the generation read before loading, and a local fill is dropped
when an invalidation arrived meanwhile (the epoch moved). With Redis unreachable the local tier is
bypassed (it could not hear invalidations) and reads go to the database. The local tier is a
`LocalTier`; the shared tier is reached only through the `Cache` interface.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from app.core.cache import Batch, Cache
from app.core.invalidation import InvalidationBus
from app.core.local_tier import LocalTier
from app.core.metrics import CacheCounts, count_cache_operations
from app.provider_configs.rendering import RenderedDocument

ALL_TYPES = "all"  # the key suffix of the whole document (not a provider type)

Loader = Callable[[str, str | None], Awaitable[RenderedDocument]]
LocalKey = tuple[str, str | None]


def cache_key(tenant_id: str, provider_type: str | None) -> str:
    return f"provider_config:{tenant_id}:{provider_type or ALL_TYPES}"


def generation_key(tenant_id: str) -> str:
    return f"provider_config_generation:{tenant_id}"


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
        on_change: Callable[[str], None] | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.enabled = enabled
        # Told of every tenant whose entries this replica drops (its own writes and those it
        # hears of), and of every reset: the change stream's wake-up.
        self._on_change = on_change
        self._on_reset = on_reset
        self.ttl_s = ttl_s
        self.database_loads = 0
        self.invalidations = 0  # writes this replica announced (tests: a preview announces none)
        # Its shared-tier reads: only this reader knows which of the keys it reads is an entry.
        self.shared_reads = count_cache_operations("shared", CacheCounts())
        self._cache = cache
        self._loader = loader
        self._local: LocalTier[LocalKey, RenderedDocument] = LocalTier(
            cache, ttl_s=ttl_s, max_entries=max_local_entries
        )
        self._inflight: dict[LocalKey, asyncio.Task[RenderedDocument]] = {}
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
    async def get(self, tenant_id: str, provider_type: str | None) -> RenderedDocument:
        """The serialized document: local tier, then Redis, then one database load per key."""
        if not self.enabled:
            return await self._loader(tenant_id, provider_type)
        key = (tenant_id, provider_type)
        body = self._local.get(key)
        if body is not None:
            return body
        if not self._cache.coherent:
            # This process may have missed invalidations: neither a load begun before a write's
            # answer (single flight) nor the shared tier (a replica cut off from Redis may not
            # have deleted its entries yet) can be trusted; the database can.
            return await self._load(tenant_id, provider_type)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fill(key, self._local.epoch))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: a reader that gives up does not cancel the load the others are waiting for.
        return await asyncio.shield(task)

    def _forget(self, key: LocalKey, task: asyncio.Task[RenderedDocument]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, raised in every waiter

    async def _fill(self, key: LocalKey, epoch: int) -> RenderedDocument:
        tenant_id, provider_type = key
        # Without Redis the shared cache is this process's memory: the local tier is enough.
        if not self._cache.shared:
            body = await self._load(tenant_id, provider_type)
            self._local.put(key, body, epoch)
            return body
        found = await self._cache.get_many(
            cache_key(tenant_id, provider_type), generation_key(tenant_id)
        )
        if found is None:  # Redis unreachable: neither tier can be trusted, nor filled
            self.shared_reads.misses += 1
            return await self._load(tenant_id, provider_type)
        shared, generation = found
        document = None if shared is None else RenderedDocument.from_bytes(shared)
        # An entry stored before entries carried their tags is a miss: loaded and replaced.
        if document is not None and document.etag is not None:
            self.shared_reads.hits += 1
            self._local.put(key, document, epoch)
            return document
        self.shared_reads.misses += 1
        body = await self._load(tenant_id, provider_type)
        await self._cache.set_if_unchanged(
            cache_key(tenant_id, provider_type),
            body.to_bytes(),
            self.ttl_s,
            guard=generation_key(tenant_id),
            expected=(generation or b"").decode(),
        )
        self._local.put(key, body, epoch)
        return body

    async def _load(self, tenant_id: str, provider_type: str | None) -> RenderedDocument:
        self.database_loads += 1
        return await self._loader(tenant_id, provider_type)

    # --- invalidation -----------------------------------------------------------------------
    async def clear(self) -> None:
        """Drop every local entry (the bus reconnected: invalidations may have been missed)."""
        self._local.clear()
        self._inflight.clear()
        if self._on_reset is not None:
            self._on_reset()

    def _drop_local(self, tenant_id: str, provider_types: Iterable[str]) -> None:
        keys = [(tenant_id, None), *((tenant_id, t) for t in provider_types)]
        self._local.drop(keys)
        for key in keys:
            self._inflight.pop(key, None)
        if self._on_change is not None:
            self._on_change(tenant_id)

    async def invalidate(self, tenant_id: str, provider_types: Iterable[str]) -> None:
        """After a commit: no replica serves the tenant's old document once this returns."""
        self.invalidations += 1
        if not self.enabled:
            if self._on_change is not None:
                self._on_change(tenant_id)  # no entries to drop, but this replica's streams
            return
        types = sorted(set(provider_types))
        if not self._cache.shared:
            self._drop_local(tenant_id, types)
            return
        # In the same transaction as the announcement: a new generation (a fill that read the
        # old one stores nothing), the shared entries gone. Replayed together if Redis is down.
        shared_entries = Batch()
        shared_entries.bump(generation_key(tenant_id), self.ttl_s * 2)
        shared_entries.delete(cache_key(tenant_id, None), *(cache_key(tenant_id, t) for t in types))
        told = await self._bus.broadcast(
            {"tenant_id": tenant_id, "types": types},
            within=shared_entries,
            # After the shared delete: a local fill that read Redis before it is discarded.
            published=lambda: self._drop_local(tenant_id, types),
        )
        if not told:
            self._drop_local(tenant_id, types)

    def _on_invalidation(self, payload: dict[str, Any]) -> None:
        """Another replica changed a tenant's configuration: drop what this one holds of it."""
        self._drop_local(str(payload["tenant_id"]), [str(t) for t in payload["types"]])

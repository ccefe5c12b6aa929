"""Invalidation of per-process caches across replicas, acknowledged, over the cache's pub/sub bus.

A domain that keeps entries in process memory (provider configurations, fresh-token rows) must
drop them on every replica when the data behind them changes. The writer, after its commit:
1. publishes a message naming what changed (`broadcast`, in one Redis transaction with any
   commands of the caller's own);
2. waits (bounded by a short timeout) until as many replicas as Redis reported receivers
   have dropped their entries and acknowledged,
so once the writer's response is sent no replica still serves the old data. Every replica,
the writer included, hears its own message; the writer answers for itself (it dropped its entries
before waiting).

With Redis unreachable, or the subscription down, a local tier cannot hear invalidations:
`coherent` is then false and the domain bypasses its local entries. An invalidation this replica
could not publish is kept and published once Redis answers again (at the next broadcast,
or when the subscription comes back), so replicas that never lost Redis drop their entries too;
past `_MAX_DEFERRED` of them they are replaced by one message that clears every replica's cache.
Without Redis (one process, in-memory cache) there is nobody else to tell and `coherent` is always
true.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from app.core.cache import Cache, RedisCache
from app.core.db import new_id

logger = logging.getLogger("junction.invalidation")

Payload = dict[str, Any]
_MAX_DEFERRED = 256
_RESET: Payload = {"reset": True}  # every receiver drops its whole cache
OnInvalidate = Callable[[Payload], None]
OnReset = Callable[[], Awaitable[None]]


@dataclass
class _Acks:
    received: int = 0
    expected: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def _check(self) -> None:
        if self.expected is not None and self.received >= self.expected:
            self.done.set()

    def expect(self, count: int) -> None:
        self.expected = count
        self._check()

    def ack(self) -> None:
        self.received += 1
        self._check()


class InvalidationBus:
    def __init__(
        self,
        cache: Cache,
        name: str,
        on_invalidate: OnInvalidate,
        on_reset: OnReset,
        *,
        ack_timeout_s: float = 0.5,
    ) -> None:
        self.redis = cache if isinstance(cache, RedisCache) else None
        self._cache = cache
        self._on_invalidate = on_invalidate
        self._on_reset = on_reset
        self._ack_timeout_s = ack_timeout_s
        self._acks: dict[str, _Acks] = {}
        self._deferred: list[Payload] = []
        self._replica_id = new_id()
        self._name = name
        # Pub/sub channels are server-wide, not per Redis database: the database number is part
        # of the name, so deployments (or test runs) sharing a Redis server never count each
        # other as replicas.
        db = self.redis.client.connection_pool.connection_kwargs.get("db", 0) if self.redis else 0
        self.channel = f"{name}:invalidate:{db}"
        self.ack_channel = f"{name}:invalidated:{db}"

    @property
    def coherent(self) -> bool:
        """True while local entries can be trusted: no other replica, or Redis answering and
        this process subscribed to hear the others' invalidations."""
        return self.redis is None or (self.redis.available and self.redis.bus_connected)

    def subscribe(self) -> None:
        """Join the bus; called from the domain's lifespan, before the cache starts."""
        if self.redis is None:
            return
        self._cache.subscribe(self.channel, self._on_message, on_reset=self._on_bus_reset)
        self._cache.subscribe(self.ack_channel, self._on_ack)

    async def _on_bus_reset(self) -> None:
        # (Re)subscribed, or disconnected: our entries may be stale either way; and if Redis
        # answers again, what we could not tell the others goes out now.
        await self._on_reset()
        if self.redis is not None and self.redis.bus_connected:
            await self.publish_deferred()

    def _defer(self, payload: Payload) -> None:
        """An invalidation that could not be published: publish it once Redis answers."""
        if len(self._deferred) >= _MAX_DEFERRED or payload == _RESET:
            self._deferred = [_RESET]
        elif self._deferred != [_RESET]:
            self._deferred.append(payload)

    def _message(self, payload: Payload) -> tuple[str, str]:
        nonce = new_id()
        return nonce, json.dumps({**payload, "nonce": nonce, "origin": self._replica_id})

    async def publish_deferred(self) -> None:
        """Publish the deferred invalidations (without waiting for acknowledgements)."""
        redis = self.redis
        while redis is not None and self._deferred:
            _, message = self._message(self._deferred[0])
            try:
                await redis.client.publish(self.channel, message)
            except (RedisError, OSError) as exc:
                self.failed(exc)
                return
            self._deferred.pop(0)

    async def broadcast(
        self,
        payload: Payload,
        *,
        within: Callable[[Pipeline], None] | None = None,
        published: Callable[[], None] | None = None,
    ) -> bool:
        """Publish `payload` and wait until every replica Redis counted has acknowledged it.

        `within` adds the caller's own commands to the same Redis transaction (one round trip);
        `published` runs once it has executed, before the wait. False when Redis could not be
        told: the payload is then kept and published once Redis answers, and meanwhile
        `coherent` is false for the caller's entries anyway.
        """
        if self.redis is None:
            return True
        if not self.redis.available:
            self._defer(payload)
            return False
        await self.publish_deferred()
        nonce, message = self._message(payload)
        acks = self._acks[nonce] = _Acks()
        try:
            async with self.redis.client.pipeline(transaction=True) as pipe:
                if within is not None:
                    within(pipe)
                pipe.publish(self.channel, message)
                *_, receivers = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._acks.pop(nonce, None)
            self.failed(exc)
            self._defer(payload)
            return False
        self.redis.breaker.success()
        if published is not None:
            published()
        try:
            acks.expect(int(receivers))
            await asyncio.wait_for(acks.done.wait(), self._ack_timeout_s)
        except TimeoutError:
            logger.warning(
                "%s invalidation: %d of %s replicas acknowledged in time",
                self._name,
                acks.received,
                acks.expected,
            )
        finally:
            self._acks.pop(nonce, None)
        return True

    def failed(self, exc: BaseException) -> None:
        """Count a Redis failure of this domain's own calls against the shared breaker."""
        assert self.redis is not None
        self.redis.stats.errors += 1
        if self.redis.breaker.failure():
            logger.warning(
                "redis unreachable (%s); %s reads bypass the local cache",
                type(exc).__name__,
                self._name,
            )

    async def _on_message(self, message: str) -> None:
        try:
            payload = json.loads(message)
            nonce = str(payload.pop("nonce"))
            origin = payload.pop("origin", None)
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("ignoring a malformed %s invalidation", self._name)
            return
        if origin == self._replica_id:
            await self._on_ack(nonce)  # the writer dropped its own entries already
            return
        if payload == _RESET:
            await self._on_reset()
        else:
            try:
                self._on_invalidate(payload)
            except (ValueError, KeyError, TypeError, AttributeError):
                logger.warning("ignoring a malformed %s invalidation", self._name)
                return
        await self._cache.publish(self.ack_channel, nonce)

    async def _on_ack(self, message: str) -> None:
        acks = self._acks.get(message)
        if acks is not None:
            acks.ack()

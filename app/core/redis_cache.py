"""The shared cache over Redis: breaker, backlog, pub/sub bus and the coherence lease's heartbeat.

Redis is an accelerator and the cross-replica lock and message bus, never a source of truth: its
calls have short socket timeouts, no retries, and sit behind one circuit breaker, so a dead Redis
costs a caller a fraction of a millisecond (a miss), not a hang. Lock operations are the exception:
they raise `CacheUnavailable`, because a caller that needs mutual exclusion must choose a fallback.

What must reach the other replicas but could not (a delete of shared entries, a transaction that
announces an invalidation) waits in one backlog and is replayed, in order and before anything
else, by the first call that finds Redis answering again, whichever call that is, and at the
latest by the heartbeat below, which tries every `HEARTBEAT_S` while the breaker allows a call.

The coherence lease (app/core/coherence_lease.py) says when this process may trust its local
tiers; this module sends its heartbeats over the bus and hears them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.core.breaker import CircuitBreaker
from app.core.cache import (
    Batch,
    Cache,
    CacheUnavailable,
    MemoryCache,
    MessageHandler,
    ResetHandler,
    ms,
)
from app.core.cache_backlog import Backlog
from app.core.coherence_lease import COHERENCE_LEASE_S, HEARTBEAT_S, CoherenceLease

logger = logging.getLogger("junction.cache")

T = TypeVar("T")

_BUS_HEALTH_CHECK_S = 5
_HEARTBEAT_CHANNEL = "junction:heartbeat"

# Compare-and-delete: release a lock only if we still own it.
_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""
# Compare-and-extend: renew a lock's time to live only if we still own it.
_EXTEND_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# Store the value only if the guard key still holds what was read ('' for absent).
_SET_IF_GUARD = """
local g = redis.call('get', KEYS[2])
if (g == false and ARGV[1] == '') or g == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RedisCache(Cache):
    backend = "redis"
    shared = True
    coherence_lease_s = COHERENCE_LEASE_S

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = 0.25,
        breaker_failures: int = 3,
        breaker_reset_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.url = url
        # No retries: a failed call is a miss, and the breaker keeps a dead Redis from costing
        # every request a timeout.
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            max_connections=64,
        )
        self.breaker = CircuitBreaker(breaker_failures, breaker_reset_s)
        self._backlog = Backlog()
        # One replay at a time: two callers replaying at once would send the same items twice.
        self._replaying = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self._bus: aioredis.Redis | None = None
        # True while the pub/sub connection is subscribed: a local cache that relies on hearing
        # invalidations can trust its entries only then.
        self._bus_connected = False
        # Pub/sub channels are server-wide, not per database: the database number goes into
        # channel names, so deployments (or test runs) sharing a server never hear each other.
        self._db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        self._release = self.client.register_script(_RELEASE_IF_OWNER)
        self._extend = self.client.register_script(_EXTEND_IF_OWNER)
        self._set_if_guard = self.client.register_script(_SET_IF_GUARD)
        self._lease = CoherenceLease(breaker_reset_s=breaker_reset_s)
        self._heartbeat_channel = self.channel_name(_HEARTBEAT_CHANNEL)
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return not self.breaker.is_open

    @property
    def bus_connected(self) -> bool:
        return self._bus_connected

    @property
    def coherent(self) -> bool:
        return self.coherent_at(time.monotonic())

    def coherent_at(self, now: float) -> bool:
        # On the hot path of every cached read: two compares and a few attribute reads while the
        # breaker is closed (the lease's `trusted_at`, inlined).
        lease = self._lease
        return (
            lease.trusted_from <= now < lease.trusted_until
            and self._bus_connected
            and not self.breaker.is_open
        )

    @property
    def lapses(self) -> int:
        return self._lease.lapses

    def channel_name(self, name: str) -> str:
        return f"{name}:{self._db}"

    async def start(self) -> None:
        if self._subscriptions and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="cache-bus")
            self._heartbeat = asyncio.create_task(self._beat(), name="cache-heartbeat")
            # Serve local tiers from the first request on when Redis is there; never wait long
            # when it is not (the first failed subscription ends the wait too).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lease.first_trust.wait(), timeout=2.0)

    async def close(self) -> None:
        self._closing = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await self._heartbeat
            self._heartbeat = None
        if self._listener:
            # redis-py can swallow a cancellation inside a read; closing the bus connection makes
            # the listener's read fail, and the flag makes it return.
            if self._bus is not None:
                with contextlib.suppress(Exception):
                    await self._bus.aclose()
            try:
                await asyncio.wait_for(asyncio.shield(self._listener), timeout=2.0)
            except (TimeoutError, asyncio.CancelledError, Exception):
                self._listener.cancel()
            self._listener = None
        with contextlib.suppress(Exception):
            await self.client.aclose()

    def subscribe(
        self, channel: str, handler: MessageHandler, on_reset: ResetHandler | None = None
    ) -> None:
        if self._listener is not None:
            raise RuntimeError("subscribe before the cache starts (in a domain's lifespan)")
        super().subscribe(channel, handler, on_reset)

    # --- the one failure path, the one backlog ------------------------------------------------
    def _ok(self) -> None:
        if self.breaker.success():
            logger.info("redis reachable again; circuit closed")

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        if self.breaker.failure():
            self.stats.breaker_opened += 1
            logger.warning(
                "redis unreachable (%s); circuit open, local tiers bypassed", type(exc).__name__
            )

    async def _call(self, command: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """One call behind the breaker, after the backlog (so it lands after what failed before).

        Raises `CacheUnavailable` when the breaker is open or the call or the replay failed.
        """
        if not self.breaker.allow():
            raise CacheUnavailable("redis circuit open")
        try:
            # While a replay is under way the backlog looks empty: wait for it all the same.
            if self._backlog or self._replaying.locked():
                await self._replay()
            result = await command(self.client)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            raise CacheUnavailable(type(exc).__name__) from exc
        self._ok()
        return result

    async def _replay(self) -> None:
        """Send the backlog; raises the Redis error (the backlog is then kept, in order)."""
        async with self._replaying:
            if not self._backlog:
                return  # another caller replayed it while we waited
            taken = self._backlog.take()
            try:
                await self._transaction(taken.batch)
            except BaseException:
                self._backlog.put_back(taken)
                raise

    async def _transaction(self, batch: Batch) -> int:
        async with self.client.pipeline(transaction=True) as pipe:
            for key, ttl_ms in batch.bumps.items():
                pipe.incr(key)
                pipe.pexpire(key, ttl_ms)
            if batch.deletes:
                pipe.delete(*batch.deletes)
            for channel, message, _ in batch.messages:
                pipe.publish(channel, message)
            results = await pipe.execute()
        return int(results[-1]) if batch.messages else 0

    # --- operations ---------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        try:
            raw = await self._call(lambda client: client.get(key))
        except CacheUnavailable:
            self.stats.misses += 1
            return None
        value: bytes | None = raw.encode() if isinstance(raw, str) else raw
        if value is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return value

    async def get_many(self, *keys: str) -> list[bytes | None] | None:
        try:
            raw: list[Any] = await self._call(lambda client: client.mget(*keys))
        except CacheUnavailable:
            return None
        return [value.encode() if isinstance(value, str) else value for value in raw]

    async def set(self, key: str, value: bytes | str, ttl_s: float) -> None:
        with contextlib.suppress(CacheUnavailable):
            await self._call(lambda client: client.set(key, value, px=ms(ttl_s)))

    async def set_if_unchanged(
        self, key: str, value: bytes, ttl_s: float, *, guard: str, expected: str
    ) -> bool:
        try:
            stored = await self._call(
                lambda _: self._set_if_guard(
                    keys=[key, guard], args=[expected, value, int(ttl_s * 1000)]
                )
            )
        except CacheUnavailable:
            return False
        return bool(stored)

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        batch = Batch()
        batch.delete(*keys)
        await self.execute(batch)

    async def execute(self, batch: Batch) -> int | None:
        try:
            return await self._call(lambda _: self._transaction(batch))
        except CacheUnavailable:
            self._backlog.add(batch)
            return None

    async def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        acquired = await self._call(lambda client: client.set(name, owner, nx=True, px=ms(ttl_s)))
        return bool(acquired)

    async def release_lock(self, name: str, owner: str) -> bool:
        # Tried even with the breaker open: a lock left behind blocks its name until its TTL.
        try:
            released = await self._release(keys=[name], args=[owner])
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._ok()
        return bool(released)

    async def extend_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        try:
            extended = await self._call(
                lambda _: self._extend(keys=[name], args=[owner, ms(ttl_s)])
            )
        except CacheUnavailable:
            return False
        return bool(extended)

    async def publish(self, channel: str, message: str) -> None:
        with contextlib.suppress(CacheUnavailable):
            await self._call(lambda client: client.publish(channel, message))

    async def ping(self) -> bool:
        # The health probe asks Redis itself, whatever the breaker says.
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._ok()
        await self._replay_quietly()
        return True

    async def _replay_quietly(self) -> None:
        """Replay the backlog now that Redis answered; a failure counts against the breaker."""
        if not self._backlog:
            return
        try:
            await self._replay()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._ok()

    # --- the coherence lease ---------------------------------------------------------------
    async def _beat(self) -> None:
        """Every `HEARTBEAT_S` while the breaker allows a call: replay the backlog if any (so a
        write nobody could announce goes out without waiting for the next request), then send a
        heartbeat."""
        while not self._closing:
            if self.breaker.allow():
                if self._backlog:
                    await self._replay_quietly()
                if self._bus_connected:
                    await self._send_heartbeat()
            await asyncio.sleep(HEARTBEAT_S)

    async def _send_heartbeat(self) -> None:
        try:
            await self.client.publish(self._heartbeat_channel, self._lease.next_heartbeat())
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._ok()

    async def wait_out_lease(self) -> None:
        # Redis stopped answering no later than this process's first failed call of the run:
        # every replica that lost it too stops trusting its tier a lease after that.
        since = self.breaker.failing_since
        remaining = COHERENCE_LEASE_S
        if since is not None:
            remaining = since + COHERENCE_LEASE_S - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def _listen(self) -> None:
        """Keep one pub/sub connection open; after any gap, tell subscribers to reset."""
        channels = [*self._subscriptions, self._heartbeat_channel]
        delay = 0.1
        while not self._closing:
            # The health check PINGs an idle subscription, so a connection the server dropped is
            # noticed (and the subscribers reset) within seconds rather than at the next message.
            bus = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=1.0, health_check_interval=_BUS_HEALTH_CHECK_S
            )
            self._bus = bus
            pubsub = bus.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                # Anything published while we were not subscribed is lost: drop derived state.
                await self._reset_subscribers()
                self._bus_connected = True
                delay = 0.1
                # Redis answers again: what this process could not tell the others goes out now.
                await self._replay_quietly()
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    channel = message["channel"]
                    data = message["data"]
                    channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                    data = data.decode() if isinstance(data, bytes) else str(data)
                    if channel == self._heartbeat_channel:
                        self._lease.heard(data)
                    else:
                        await self._dispatch(channel, data)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # Not subscribed from here on: local caches must stop trusting their entries now,
                # not after the back-off below.
                self._bus_connected = False
                self._lease.lapse()
                # Start-up need not wait for a Redis that is not there.
                self._lease.first_trust.set()
                if self._closing:
                    return
                logger.warning("cache bus disconnected (%s); reconnecting", type(exc).__name__)
                await self._reset_subscribers()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self._bus_connected = False
                self._lease.lapse()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await bus.aclose()


def build_cache(
    redis_url: str | None,
    *,
    socket_timeout_s: float = 0.25,
    breaker_failures: int = 3,
    breaker_reset_s: float = 5.0,
) -> Cache:
    """Redis when a URL is given (several replicas), this process's memory otherwise."""
    if not redis_url:
        return MemoryCache()
    return RedisCache(
        redis_url,
        socket_timeout_s=socket_timeout_s,
        breaker_failures=breaker_failures,
        breaker_reset_s=breaker_reset_s,
    )

"""The shared cache: one small interface, over Redis or in-process.

Redis is an accelerator and the cross-replica lock and message bus, never a source of truth: its
calls have short socket timeouts, no retries, and sit behind a circuit breaker, so a dead Redis
costs a caller a fraction of a millisecond (a miss), not a hang. Lock operations are the exception:
they raise `CacheUnavailable`, because a caller that needs mutual exclusion must choose a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger("junction.cache")

MessageHandler = Callable[[str], Awaitable[None]]
ResetHandler = Callable[[], Awaitable[None]]

_BUS_HEALTH_CHECK_S = 5

# Compare-and-delete: release a lock only if we still own it.
_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class CacheUnavailable(Exception):
    """The shared cache cannot be reached (breaker open or call failed)."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    breaker_opened: int = 0


@dataclass
class _Subscription:
    handlers: list[MessageHandler] = field(default_factory=list)
    resets: list[ResetHandler] = field(default_factory=list)


class CircuitBreaker:
    """Closed → open after N consecutive failures → one trial call after `reset_s` → closed."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self.failure_threshold = failures
        self.reset_s = reset_s
        self.consecutive_failures = 0
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and time.monotonic() - self.opened_at < self.reset_s

    def allow(self) -> bool:
        return not self.is_open

    def success(self) -> bool:
        """Record a success; True when this closes a breaker that was open."""
        was_open = self.opened_at is not None
        self.consecutive_failures = 0
        self.opened_at = None
        return was_open

    def failure(self) -> bool:
        """Record a failure; True when this opens the breaker."""
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failure_threshold:
            newly = self.opened_at is None or not self.is_open
            self.opened_at = time.monotonic()
            return newly
        return False


class Cache:
    """Interface; see `RedisCache` and `MemoryCache`."""

    backend = "none"

    def __init__(self) -> None:
        self.stats = CacheStats()
        self._subscriptions: dict[str, _Subscription] = {}

    @property
    def available(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def set(self, key: str, value: bytes | str, ttl_s: float) -> None:
        raise NotImplementedError

    async def delete(self, *keys: str) -> None:
        raise NotImplementedError

    async def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        raise NotImplementedError

    async def release_lock(self, name: str, owner: str) -> bool:
        raise NotImplementedError

    async def publish(self, channel: str, message: str) -> None:
        raise NotImplementedError

    async def ping(self) -> bool:
        raise NotImplementedError

    def subscribe(
        self, channel: str, handler: MessageHandler, on_reset: ResetHandler | None = None
    ) -> None:
        """`handler` gets every message on `channel`, from this and other replicas.

        `on_reset` runs when messages may have been missed (the bus reconnected), so a subscriber
        that keeps derived state (a local cache) can drop it.
        """
        sub = self._subscriptions.setdefault(channel, _Subscription())
        sub.handlers.append(handler)
        if on_reset:
            sub.resets.append(on_reset)

    async def _dispatch(self, channel: str, message: str) -> None:
        for handler in list(self._subscriptions.get(channel, _Subscription()).handlers):
            try:
                await handler(message)
            except Exception:
                logger.exception("cache message handler failed on %s", channel)

    async def _reset_subscribers(self) -> None:
        for sub in list(self._subscriptions.values()):
            for reset in sub.resets:
                try:
                    await reset()
                except Exception:
                    logger.exception("cache reset handler failed")


class MemoryCache(Cache):
    """In-process cache, locks and bus: the embedded default for a single process."""

    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._data: dict[str, tuple[bytes, float]] = {}

    def _live(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._data.pop(key, None)
            return None
        return entry[0]

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        if value is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return value

    async def set(self, key: str, value: bytes | str, ttl_s: float) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._data[key] = (data, time.monotonic() + ttl_s)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        if self._live(name) is not None:
            return False
        self._data[name] = (owner.encode(), time.monotonic() + ttl_s)
        return True

    async def release_lock(self, name: str, owner: str) -> bool:
        if self._live(name) == owner.encode():
            self._data.pop(name, None)
            return True
        return False

    async def publish(self, channel: str, message: str) -> None:
        await self._dispatch(channel, message)

    async def ping(self) -> bool:
        return True


class RedisCache(Cache):
    backend = "redis"

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
        self._pending_deletes: set[str] = set()
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self._bus: aioredis.Redis | None = None
        # True while the pub/sub connection is subscribed: a local cache that relies on hearing
        # invalidations can trust its entries only then.
        self.bus_connected = False
        self._release = self.client.register_script(_RELEASE_IF_OWNER)

    @property
    def available(self) -> bool:
        return not self.breaker.is_open

    async def start(self) -> None:
        if self._subscriptions and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="cache-bus")

    async def close(self) -> None:
        self._closing = True
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

    # --- breaker plumbing ---------------------------------------------------------------
    def _ok(self) -> None:
        if self.breaker.success():
            logger.info("redis reachable again; circuit closed")

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        if self.breaker.failure():
            self.stats.breaker_opened += 1
            logger.warning("redis unreachable (%s); circuit open", type(exc).__name__)

    async def _flush_pending_deletes(self) -> None:
        # Invalidations that failed while Redis was down are replayed once it answers again.
        if not self._pending_deletes:
            return
        keys = list(self._pending_deletes)
        try:
            await self.client.delete(*keys)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._pending_deletes.difference_update(keys)

    # --- operations ---------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        if not self.breaker.allow():
            self.stats.misses += 1
            return None
        try:
            await self._flush_pending_deletes()
            raw = await self.client.get(key)
            value = raw.encode() if isinstance(raw, str) else raw
        except (RedisError, OSError) as exc:
            self._failed(exc)
            self.stats.misses += 1
            return None
        self._ok()
        if value is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return value

    async def set(self, key: str, value: bytes | str, ttl_s: float) -> None:
        if not self.breaker.allow():
            return
        try:
            await self.client.set(key, value, px=max(1, int(ttl_s * 1000)))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._ok()

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        if not self.breaker.allow():
            self._pending_deletes.update(keys)
            return
        try:
            await self.client.delete(*keys)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            self._pending_deletes.update(keys)
            return
        self._ok()

    async def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        if not self.breaker.allow():
            raise CacheUnavailable("redis circuit open")
        try:
            acquired = await self.client.set(name, owner, nx=True, px=max(1, int(ttl_s * 1000)))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            raise CacheUnavailable(str(type(exc).__name__)) from exc
        self._ok()
        return bool(acquired)

    async def release_lock(self, name: str, owner: str) -> bool:
        try:
            released = await self._release(keys=[name], args=[owner])
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._ok()
        return bool(released)

    async def publish(self, channel: str, message: str) -> None:
        if not self.breaker.allow():
            return
        try:
            await self.client.publish(channel, message)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._ok()

    async def ping(self) -> bool:
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._ok()
        await self._flush_pending_deletes()
        return True

    async def _listen(self) -> None:
        """Keep one pub/sub connection open; after any gap, tell subscribers to reset."""
        channels = list(self._subscriptions)
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
                self.bus_connected = True
                delay = 0.1
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    channel = message["channel"]
                    data = message["data"]
                    await self._dispatch(
                        channel.decode() if isinstance(channel, bytes) else str(channel),
                        data.decode() if isinstance(data, bytes) else str(data),
                    )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # Not subscribed from here on: local caches must stop trusting their entries now,
                # not after the back-off below.
                self.bus_connected = False
                if self._closing:
                    return
                logger.warning("cache bus disconnected (%s); reconnecting", type(exc).__name__)
                await self._reset_subscribers()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self.bus_connected = False
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
    if not redis_url:
        return MemoryCache()
    return RedisCache(
        redis_url,
        socket_timeout_s=socket_timeout_s,
        breaker_failures=breaker_failures,
        breaker_reset_s=breaker_reset_s,
    )

"""The shared cache: one small interface, and its in-process implementation.

Redis is an accelerator and the cross-replica lock and message bus, never a source of truth
(`app/core/redis_cache.py`): a dead Redis costs a caller a miss, not a hang. Lock operations are
the exception: they raise `CacheUnavailable`, because a caller that needs mutual exclusion must
choose a fallback. Without Redis (one process) `MemoryCache` holds the entries, the locks and the
bus in this process's memory. `app.core.redis_cache.build_cache` picks one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.core.metrics import count_cache_operations

logger = logging.getLogger("junction.cache")

MessageHandler = Callable[[str], Awaitable[None]]
ResetHandler = Callable[[], Awaitable[None]]


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


def ms(seconds: float) -> int:
    """Seconds as Redis's whole milliseconds (at least one)."""
    return max(1, int(seconds * 1000))


@dataclass
class Batch:
    """Commands sent in one transaction (`Cache.execute`), in the order they were added."""

    bumps: dict[str, int] = field(default_factory=dict)  # counter key -> expiry (ms)
    deletes: list[str] = field(default_factory=list)
    # (channel, message, backlog message): the last stands for any number of the channel's
    # messages when too many wait in the backlog.
    messages: list[tuple[str, str, str]] = field(default_factory=list)

    def bump(self, key: str, ttl_s: float) -> None:
        """Increment the counter at `key` (a generation) and keep it for `ttl_s`."""
        self.bumps[key] = ms(ttl_s)

    def delete(self, *keys: str) -> None:
        self.deletes.extend(keys)

    def publish(self, channel: str, message: str, *, backlog_message: str) -> None:
        self.messages.append((channel, message, backlog_message))


class Cache:
    """Interface; see `RedisCache` and `MemoryCache`."""

    backend = "none"
    # True when other processes share this cache: only then do local tiers need invalidations.
    shared = False

    def __init__(self) -> None:
        self.stats = CacheStats()
        self._subscriptions: dict[str, _Subscription] = {}
        count_cache_operations("shared", self.stats)

    @property
    def available(self) -> bool:
        return True

    @property
    def bus_connected(self) -> bool:
        """True while this process hears the messages others publish."""
        return True

    # How long a writer that could not announce an invalidation waits before answering, and the
    # least a writer waits for acknowledgements (see the module docstring).
    coherence_lease_s = 0.0

    @property
    def coherent(self) -> bool:
        """True while a per-process tier may trust its entries: no other replica, or Redis
        answering, this process subscribed and its coherence lease current."""
        return True

    @property
    def lapses(self) -> int:
        """How many times this process stopped trusting its local tiers (lease lapsed, bus
        lost) and regained trust."""
        return 0

    def coherent_at(self, now: float) -> bool:
        """`coherent` for a caller that already read `time.monotonic()`."""
        return True

    async def wait_out_lease(self) -> None:
        """Return once every replica that cannot hear Redis has stopped trusting its local tier
        (for a writer that could not announce an invalidation)."""
        return None

    def channel_name(self, name: str) -> str:
        """A pub/sub channel for `name`, private to this cache's database."""
        return f"{name}:0"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def get_many(self, *keys: str) -> list[bytes | None] | None:
        """The values of `keys`, in order; None when the cache cannot be reached."""
        raise NotImplementedError

    async def set(self, key: str, value: bytes | str, ttl_s: float) -> None:
        raise NotImplementedError

    async def set_if_unchanged(
        self, key: str, value: bytes, ttl_s: float, *, guard: str, expected: str
    ) -> bool:
        """Store `value` only while `guard` still holds `expected` ('' for absent)."""
        raise NotImplementedError

    async def delete(self, *keys: str) -> None:
        raise NotImplementedError

    async def execute(self, batch: Batch) -> int | None:
        """Run `batch` as one transaction: the receiver count of its last message (0 without one),
        or None when the cache could not be reached; the batch is then replayed once it can."""
        raise NotImplementedError

    async def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        raise NotImplementedError

    async def release_lock(self, name: str, owner: str) -> bool:
        raise NotImplementedError

    async def extend_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Give a lock we still own a fresh `ttl_s`; False when it is not ours or Redis is away."""
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

    async def get_many(self, *keys: str) -> list[bytes | None] | None:
        return [self._live(key) for key in keys]

    async def set(self, key: str, value: bytes | str, ttl_s: float) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._data[key] = (data, time.monotonic() + ttl_s)

    async def set_if_unchanged(
        self, key: str, value: bytes, ttl_s: float, *, guard: str, expected: str
    ) -> bool:
        if (self._live(guard) or b"").decode() != expected:
            return False
        await self.set(key, value, ttl_s)
        return True

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def execute(self, batch: Batch) -> int | None:
        for key, ttl_ms in batch.bumps.items():
            await self.set(key, str(int(self._live(key) or b"0") + 1), ttl_ms / 1000)
        await self.delete(*batch.deletes)
        receivers = 0
        for channel, message, _ in batch.messages:
            receivers = len(self._subscriptions.get(channel, _Subscription()).handlers)
            await self._dispatch(channel, message)
        return receivers

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

    async def extend_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        if self._live(name) != owner.encode():
            return False
        self._data[name] = (owner.encode(), time.monotonic() + ttl_s)
        return True

    async def publish(self, channel: str, message: str) -> None:
        await self._dispatch(channel, message)

    async def ping(self) -> bool:
        return True

"""A per-process tier in front of the shared cache: bounded, expiring, trusted only while coherent.

A domain keeps its hottest reads here (a serialized configuration document, a fresh-token row) so
a warm read is a dict lookup, a clock compare and the `coherent` gate. Entries are dropped on
every replica through an `InvalidationBus` when the data behind them changes; while this process
could miss such a message (Redis unreachable, subscription down) the gate makes every read a miss.

A reader that loads from the database reads `epoch` first and hands it to `put`: an invalidation
that arrived during the load moves the epoch, and what was loaded (perhaps before the change)
is not kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from app.core.cache import Cache
from app.core.metrics import CacheCounts, count_cache_operations

K = TypeVar("K")
V = TypeVar("V")


class _Slot(Generic[V]):
    __slots__ = ("value", "expires_at")

    def __init__(self, value: V, expires_at: float) -> None:
        self.value = value
        self.expires_at = expires_at  # time.monotonic()


class LocalTier(Generic[K, V]):
    def __init__(
        self,
        cache: Cache,
        *,
        ttl_s: float,
        max_entries: int,
        on_forget: Callable[[K, V], None] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.counts = count_cache_operations("local", CacheCounts())
        self._cache = cache
        # Told of each entry evicted or dropped (not on `clear`), for an index of the caller's own.
        self._on_forget = on_forget
        self._entries: dict[K, _Slot[V]] = {}
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    @property
    def epoch(self) -> int:
        """Read before a database load; `put` ignores the value if an invalidation came since."""
        return self._epoch

    def get(self, key: K) -> V | None:
        # The hot path of every cached read: keep it to these three checks.
        slot = self._entries.get(key)
        if slot is None:
            self.counts.misses += 1
            return None
        now = time.monotonic()
        if slot.expires_at <= now or not self._cache.coherent_at(now):
            self.counts.misses += 1
            return None
        self.counts.hits += 1
        return slot.value

    def put(self, key: K, value: V, epoch: int, serve_for_s: float | None = None) -> bool:
        """Keep `value` for `serve_for_s` seconds (capped at the TTL); False when not kept."""
        serve_for_s = self.ttl_s if serve_for_s is None else min(serve_for_s, self.ttl_s)
        if epoch != self._epoch or serve_for_s <= 0 or not self._cache.coherent:
            return False
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self._forget(next(iter(self._entries)))
        self._entries[key] = _Slot(value, time.monotonic() + serve_for_s)
        return True

    def _forget(self, key: K) -> None:
        slot = self._entries.pop(key, None)
        if slot is not None and self._on_forget is not None:
            self._on_forget(key, slot.value)

    def drop(self, keys: Iterable[K]) -> None:
        """Forget `keys` and move the epoch: a load under way may predate their change."""
        self._epoch += 1
        for key in keys:
            self._forget(key)

    def clear(self) -> None:
        """Forget everything (invalidations may have been missed)."""
        self._entries.clear()
        self._epoch += 1

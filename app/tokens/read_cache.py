"""Per-process cache of fresh-token rows, so a read of a valid token needs no database round trip.

An entry is the row a token read loaded (`_TokenRow` in the service), access token still
encrypted: it is decrypted per read, so no plaintext token lives longer than a request. An entry
serves only while the token is outside its provider's refresh margin and for at most `ttl_s`;
past that the read goes to the database (and refreshes when due).

Coherence across replicas: every change to a connection that a read could see (refresh, failed
refresh, new login, disconnect, client edit or deletion) invalidates it after its commit through
an acknowledged `InvalidationBus`, so once the change's caller has its answer no replica serves
the old row. A read that loaded from the database while an invalidation arrived does not store
what it read (the epoch moved). With Redis unreachable the cache is bypassed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.cache import Cache
from app.core.invalidation import InvalidationBus

Key = tuple[str, str, str]  # tenant_id, provider, branch_id


@dataclass(slots=True)
class Entry:
    row: Any
    serve_until: float  # time.monotonic()
    last_used_at: datetime | None


class TokenReadCache:
    def __init__(
        self,
        cache: Cache,
        *,
        ttl_s: float,
        enabled: bool = True,
        max_entries: int = 10_000,
        ack_timeout_s: float = 0.5,
    ) -> None:
        self.enabled = enabled and ttl_s > 0
        self.ttl_s = ttl_s
        self.hits = 0
        self._max_entries = max_entries
        self._entries: dict[Key, Entry] = {}
        self._keys_by_id: dict[str, Key] = {}
        self._epoch = 0
        self._bus = InvalidationBus(
            cache, "tokens", self._on_invalidation, self.clear, ack_timeout_s=ack_timeout_s
        )

    def subscribe(self) -> None:
        if self.enabled:
            self._bus.subscribe()

    @property
    def epoch(self) -> int:
        """Read before a database load; `put` ignores the row if an invalidation came since."""
        return self._epoch

    def get(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None or entry.serve_until <= time.monotonic() or not self._bus.coherent:
            return None
        self.hits += 1
        return entry

    def put(
        self, key: Key, row: Any, epoch: int, serve_for_s: float, last_used_at: datetime | None
    ) -> None:
        """Keep `row` for at most `serve_for_s` seconds (capped at the TTL)."""
        if not self.enabled or epoch != self._epoch or serve_for_s <= 0:
            return
        if not self._bus.coherent:
            return
        if len(self._entries) >= self._max_entries and key not in self._entries:
            oldest = next(iter(self._entries))
            self._forget(oldest)
        serve_until = time.monotonic() + min(serve_for_s, self.ttl_s)
        self._entries[key] = Entry(row, serve_until, last_used_at)
        self._keys_by_id[row.id] = key

    # --- invalidation -----------------------------------------------------------------------
    async def clear(self) -> None:
        """Drop everything (the bus reconnected: invalidations may have been missed)."""
        self._entries.clear()
        self._keys_by_id.clear()
        self._epoch += 1

    async def invalidate(
        self, connection_ids: Iterable[str] = (), *, tenant_id: str | None = None
    ) -> None:
        """After a commit: no replica serves these connections (or the tenant's) once it returns."""
        if not self.enabled:
            return
        ids = sorted(set(connection_ids))
        payload: dict[str, Any] = {"ids": ids, "tenant_id": tenant_id}
        self._drop(payload)
        await self._bus.broadcast(payload)

    def _on_invalidation(self, payload: dict[str, Any]) -> None:
        ids = payload["ids"]
        tenant_id = payload["tenant_id"]
        if not isinstance(ids, list) or not (tenant_id is None or isinstance(tenant_id, str)):
            raise TypeError("malformed token invalidation")
        self._drop(payload)

    def _drop(self, payload: dict[str, Any]) -> None:
        self._epoch += 1
        for connection_id in payload["ids"]:
            key = self._keys_by_id.get(str(connection_id))
            if key is not None:
                self._forget(key)
        tenant_id = payload["tenant_id"]
        if tenant_id is not None:
            for key in [k for k in self._entries if k[0] == tenant_id]:
                self._forget(key)

    def _forget(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and self._keys_by_id.get(entry.row.id) == key:
            del self._keys_by_id[entry.row.id]

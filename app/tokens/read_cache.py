"""Per-process cache of fresh-token rows, so a read of a valid token needs no database round trip.

An entry is the row a token read loaded (`TokenRow` in app/tokens/reads.py) with what its reads
share (its answer rendered but for the token, the token parsed), access token still encrypted:
it is decrypted per read, so no plaintext token lives longer than a request. An entry
serves only while the token is outside its provider's refresh margin and for at most `ttl_s`;
past that the read goes to the database (and refreshes when due).

Coherence across replicas: every change to a connection that a read could see (refresh, failed
refresh, new login, disconnect, client edit or deletion) invalidates it after its commit through
an acknowledged `InvalidationBus`, so once the change's caller has its answer no replica serves
the old row. A read that loaded from the database while an invalidation arrived does not store
what it read (the epoch moved). With Redis unreachable the cache is bypassed. The entries, their
bound, expiry, epoch and that gate are a `LocalTier`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.cache import Cache
from app.core.invalidation import InvalidationBus
from app.core.local_tier import LocalTier

logger = logging.getLogger("junction.tokens")

Key = tuple[str, str, str]  # tenant_id, provider, branch_id


@dataclass(slots=True)
class Entry:
    row: Any
    prepared: Any  # what the reads of the row share; the access token in it still sealed
    last_used_at: datetime | None
    # When (time.monotonic()) a read is next to write last_used_at: compared on every cached
    # read, without the wall clock.
    touch_at: float


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
        self._tier: LocalTier[Key, Entry] = LocalTier(
            cache, ttl_s=ttl_s, max_entries=max_entries, on_forget=self._unindex
        )
        self._keys_by_id: dict[str, Key] = {}
        self._bus = InvalidationBus(
            cache, "tokens", self._on_invalidation, self.clear, ack_timeout_s=ack_timeout_s
        )
        # The fresh-token read's hot path: the tier's own lookup, with no call in between.
        self.get = self._tier.get
        # Invalidated ids waiting for the next message, the future it resolves, who sends it.
        self._pending_ids: set[str] = set()
        self._next_message: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None

    def subscribe(self) -> None:
        if self.enabled:
            self._bus.subscribe()

    @property
    def hits(self) -> int:
        return self._tier.counts.hits

    @property
    def epoch(self) -> int:
        """Read before a database load; `put` ignores the row if an invalidation came since."""
        return self._tier.epoch

    def put(
        self,
        key: Key,
        row: Any,
        prepared: Any,
        epoch: int,
        serve_for_s: float,
        last_used_at: datetime | None,
        touch_at: float,
    ) -> None:
        """Keep `row` (and `prepared`) for at most `serve_for_s` seconds (capped at the TTL)."""
        entry = Entry(row, prepared, last_used_at, touch_at)
        if self.enabled and self._tier.put(key, entry, epoch, serve_for_s):
            self._keys_by_id[row.id] = key

    # --- invalidation -----------------------------------------------------------------------
    async def clear(self) -> None:
        """Drop everything (the bus reconnected: invalidations may have been missed)."""
        self._tier.clear()
        self._keys_by_id.clear()

    async def invalidate(
        self, connection_ids: Iterable[str] = (), *, tenant_id: str | None = None
    ) -> None:
        """After a commit: no replica serves these connections (or the tenant's) once it returns."""
        if not self.enabled:
            return
        ids = sorted(set(connection_ids))
        payload: dict[str, Any] = {"ids": ids, "tenant_id": tenant_id}
        self._drop(payload)
        if tenant_id is not None:
            await self._bus.broadcast(payload)
            return
        await self._broadcast_with_others(ids)

    async def _broadcast_with_others(self, ids: list[str]) -> None:
        """Broadcast `ids` in the next message that starts, with every other connection
        invalidated meanwhile (the monitoring loop finishes many refreshes at once), and return
        once it is acknowledged: one message and one round of acknowledgements for all of them.
        A message already in flight was published before these commits were known to it, so
        these ids wait for the next one."""
        self._pending_ids.update(ids)
        sent = self._next_message
        if sent is None:
            sent = self._next_message = asyncio.get_running_loop().create_future()
            if self._sender is None or self._sender.done():
                self._sender = asyncio.create_task(self._send_pending(), name="token-invalidation")
        # Shielded: a caller cancelled meanwhile leaves the message to the others.
        await asyncio.shield(sent)

    async def _send_pending(self) -> None:
        try:
            while self._pending_ids:
                ids = sorted(self._pending_ids)
                self._pending_ids.clear()
                sent, self._next_message = self._next_message, None
                try:
                    await self._bus.broadcast({"ids": ids, "tenant_id": None})
                except Exception:
                    logger.warning("token invalidation could not be broadcast", exc_info=True)
                finally:
                    if sent is not None and not sent.done():
                        sent.set_result(None)
        finally:
            # Ended early (cancelled at shutdown): nobody may wait for a message no task sends;
            # what is pending goes with the next caller's message.
            waiting, self._next_message = self._next_message, None
            if waiting is not None and not waiting.done():
                waiting.set_result(None)

    def _on_invalidation(self, payload: dict[str, Any]) -> None:
        ids = payload["ids"]
        tenant_id = payload["tenant_id"]
        if not isinstance(ids, list) or not (tenant_id is None or isinstance(tenant_id, str)):
            raise TypeError("malformed token invalidation")
        self._drop(payload)

    def _drop(self, payload: dict[str, Any]) -> None:
        keys = [self._keys_by_id[str(i)] for i in payload["ids"] if str(i) in self._keys_by_id]
        tenant_id = payload["tenant_id"]
        if tenant_id is not None:
            keys.extend(key for key in self._tier if key[0] == tenant_id)
        self._tier.drop(keys)

    def _unindex(self, key: Key, entry: Entry) -> None:
        if self._keys_by_id.get(entry.row.id) == key:
            del self._keys_by_id[entry.row.id]

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
could not publish waits in the cache's backlog, with the shared-entry commands of its transaction,
and goes out on the first call that finds Redis answering again, so replicas that never lost Redis
drop their entries too; past `MAX_BACKLOG_MESSAGES` of them they are replaced by one message that
clears every replica's cache.
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

from app.core.cache import Batch, Cache
from app.core.db import new_id

logger = logging.getLogger("junction.invalidation")

Payload = dict[str, Any]
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
        if ack_timeout_s < cache.coherence_lease_s:
            raise ValueError("the acknowledgement wait must be at least the coherence lease")
        self._cache = cache
        self._on_invalidate = on_invalidate
        self._on_reset = on_reset
        self._ack_timeout_s = ack_timeout_s
        self._acks: dict[str, _Acks] = {}
        self._replica_id = new_id()
        self._name = name
        self.channel = cache.channel_name(f"{name}:invalidate")
        self.ack_channel = cache.channel_name(f"{name}:invalidated")

    @property
    def coherent(self) -> bool:
        """True while local entries can be trusted (see `Cache.coherent`)."""
        return self._cache.coherent

    def subscribe(self) -> None:
        """Join the bus; called from the domain's lifespan, before the cache starts."""
        if not self._cache.shared:
            return
        self._cache.subscribe(self.channel, self._on_message, on_reset=self._on_reset)
        self._cache.subscribe(self.ack_channel, self._on_ack)

    def _message(self, payload: Payload) -> tuple[str, str]:
        nonce = new_id()
        return nonce, json.dumps({**payload, "nonce": nonce, "origin": self._replica_id})

    async def broadcast(
        self,
        payload: Payload,
        *,
        within: Batch | None = None,
        published: Callable[[], None] | None = None,
    ) -> bool:
        """Publish `payload` and wait until every replica Redis counted has acknowledged it.

        `within` holds the caller's own commands, sent in the same Redis transaction (one round
        trip) before the message; `published` runs once it has executed, before the wait. False
        when Redis could not be told: the transaction then waits in the cache's backlog, and
        meanwhile `coherent` is false for the caller's entries anyway.
        """
        if not self._cache.shared:
            return True
        batch = within if within is not None else Batch()
        nonce, message = self._message(payload)
        batch.publish(self.channel, message, backlog_message=self._message(_RESET)[1])
        acks = self._acks[nonce] = _Acks()
        try:
            receivers = await self._cache.execute(batch)
            if receivers is None:
                # Nobody could be told. Wait out the coherence lease: a replica that cannot hear
                # Redis either has stopped serving its local tier by then.
                await self._cache.wait_out_lease()
                return False
            if published is not None:
                published()
            acks.expect(receivers)
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

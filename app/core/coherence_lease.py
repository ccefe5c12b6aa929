"""The coherence lease: when this process may trust its per-process cache tiers.

A per-process tier may serve an entry only while this process is known to hear the cache bus:
each replica publishes a heartbeat of its own every `HEARTBEAT_S` and, on hearing it back, trusts
its local entries until `COHERENCE_LEASE_S` after the heartbeat was *sent*. Redis delivers one
subscriber's messages in the order it received them, so hearing a heartbeat sent at `s` means
every invalidation that reached Redis before `s` has been applied. A writer that announced an
invalidation answers only after every replica acknowledged it or `COHERENCE_LEASE_S` passed (the
acknowledgement wait is at least that long), and one that could not announce it waits out the
lease: by then a replica that did not apply it (paused, behind a backlog, cut off from a stalled
Redis) has stopped serving its local tier, and reads go to the database. After a lapse, trust
returns only after a grace (`regain_grace_s`: the cache's breaker reset time, two heartbeats and
the lease), so that other replicas' backlogs (writes they could not announce while Redis was
away) have been replayed and heard first.

This module keeps the lease's state and rules; `RedisCache` (app/core/redis_cache.py) sends the
heartbeats, hands back the ones it hears and says when the bus is lost.
"""

from __future__ import annotations

import asyncio
import time

HEARTBEAT_S = 0.1
COHERENCE_LEASE_S = 0.4
# Heartbeats not heard back are forgotten after this many newer ones.
_REMEMBERED_HEARTBEATS = 64


class CoherenceLease:
    def __init__(self, *, breaker_reset_s: float) -> None:
        self.regain_grace_s = breaker_reset_s + 2 * HEARTBEAT_S + COHERENCE_LEASE_S
        # Monotonic times: trusted from, trusted until. Read on the hot path of every cached
        # read (`RedisCache.coherent_at`), as plain attributes.
        self.trusted_from = float("inf")
        self.trusted_until = 0.0
        # How many times trust was lost and regained (`junction_cache_coherence_lapses_total`).
        self.lapses = 0
        # Set at the first trust, or when the bus fails first: start-up waits for either.
        self.first_trust = asyncio.Event()
        self._ever_trusted = False
        self._origin = f"{id(self):x}-{time.monotonic_ns():x}"
        self._sent: dict[int, float] = {}
        self._seq = 0

    def trusted_at(self, now: float) -> bool:
        return self.trusted_from <= now < self.trusted_until

    def next_heartbeat(self) -> str:
        """The message of the heartbeat about to be published, its send time noted."""
        self._seq += 1
        seq = self._seq
        self._sent[seq] = time.monotonic()
        for old in [s for s in self._sent if s < seq - _REMEMBERED_HEARTBEATS]:
            del self._sent[old]
        return f"{self._origin}:{seq}"

    def heard(self, message: str) -> None:
        """A heartbeat came back over the bus: extend the lease from the time it was sent."""
        origin, _, seq = message.rpartition(":")
        if origin != self._origin or not seq.isdigit():
            return  # another replica's
        sent = self._sent.pop(int(seq), None)
        if sent is None:
            return
        now = time.monotonic()
        if now >= self.trusted_until:
            if self._ever_trusted:
                self.lapses += 1
            # The lease had lapsed (or this is the first): trust again after the grace, so that
            # what other replicas could not announce meanwhile is replayed first. At start-up
            # there is nothing of ours to distrust.
            self.trusted_from = now + self.regain_grace_s if self._ever_trusted else sent
        self._ever_trusted = True
        self.trusted_until = max(self.trusted_until, sent + COHERENCE_LEASE_S)
        self.first_trust.set()

    def lapse(self) -> None:
        """The bus is lost: stop trusting now, not when the lease would have run out."""
        self.trusted_until = 0.0

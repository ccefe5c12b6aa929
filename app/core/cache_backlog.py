"""The shared cache's backlog: what must reach the other replicas but could not reach Redis,
kept in order until `RedisCache` (app/core/redis_cache.py) replays it."""

from __future__ import annotations

from app.core.cache import Batch

# Past this many messages waiting for one channel, they are replaced by its backlog message.
MAX_BACKLOG_MESSAGES = 256


class Backlog:
    """What could not reach Redis, replayed as one transaction once it answers.

    Bumps and deletes commute with each other and all precede the messages, so a replica that
    hears a replayed invalidation finds the shared entries already gone. The messages keep their
    order; past `MAX_BACKLOG_MESSAGES` on one channel they become that channel's backlog message
    (for the invalidation bus: "drop everything"), which also absorbs the channel's later ones.
    """

    def __init__(self) -> None:
        self.batch = Batch()
        self._collapsed: set[str] = set()

    def __bool__(self) -> bool:
        batch = self.batch
        return bool(batch.bumps or batch.deletes or batch.messages)

    def add(self, batch: Batch) -> None:
        for key, ttl_ms in batch.bumps.items():
            self.batch.bumps[key] = max(ttl_ms, self.batch.bumps.get(key, 0))
        self.batch.deletes.extend(k for k in batch.deletes if k not in self.batch.deletes)
        for channel, message, backlog_message in batch.messages:
            self._add_message(channel, message, backlog_message)

    def _add_message(self, channel: str, message: str, backlog_message: str) -> None:
        messages = self.batch.messages
        if channel in self._collapsed:
            return
        if sum(1 for queued in messages if queued[0] == channel) >= MAX_BACKLOG_MESSAGES:
            messages[:] = [queued for queued in messages if queued[0] != channel]
            messages.append((channel, backlog_message, backlog_message))
            self._collapsed.add(channel)
            return
        messages.append((channel, message, backlog_message))

    def take(self) -> Backlog:
        """Everything queued, leaving this backlog empty (what arrives meanwhile queues anew)."""
        taken = Backlog()
        taken.batch, taken._collapsed = self.batch, self._collapsed
        self.batch, self._collapsed = Batch(), set()
        return taken

    def put_back(self, taken: Backlog) -> None:
        """A replay failed: its items go back in front of what was queued meanwhile."""
        newer = self.take()
        self.batch, self._collapsed = taken.batch, taken._collapsed
        self.add(newer.batch)

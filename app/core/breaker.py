"""A circuit breaker: stop calling a dependency that keeps failing, try it again after a while."""

from __future__ import annotations

import time


class CircuitBreaker:
    """Closed → open after N consecutive failures → one trial call after `reset_s` → closed."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self.failure_threshold = failures
        self.reset_s = reset_s
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        # When the current run of failures began (None while calls succeed).
        self.failing_since: float | None = None

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
        self.failing_since = None
        return was_open

    def failure(self) -> bool:
        """Record a failure; True when this opens the breaker."""
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failure_threshold:
            newly = self.opened_at is None or not self.is_open
            self.opened_at = time.monotonic()
            return newly
        return False

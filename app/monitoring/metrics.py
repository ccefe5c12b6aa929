"""Prometheus figures of the monitoring loop, registered in the app's one metrics registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from app.core.metrics import registry

MONITOR_RUNNING = Gauge(
    "junction_monitor_running", "1 while this instance's monitoring loop runs", registry=registry
)
LAST_TICK_TIMESTAMP = Gauge(
    "junction_monitor_last_tick_timestamp_seconds",
    "Unix time the last completed tick started",
    registry=registry,
)
LAST_TICK_DURATION = Gauge(
    "junction_monitor_last_tick_duration_seconds",
    "Duration of the last completed tick (leasing to the last refresh finished)",
    registry=registry,
)
LAST_TICK_CONNECTIONS = Gauge(
    "junction_monitor_last_tick_connections",
    "Connections of the last completed tick by outcome (due, refreshed, failed, skipped)",
    ["outcome"],
    registry=registry,
)
REFRESHES = Counter(
    "junction_monitor_refreshes",
    "Refresh attempts made by the monitoring loop, by provider and result",
    ["provider", "result"],
    registry=registry,
)
CONNECTIONS = Gauge(
    "junction_monitor_connections",
    "Connections by provider and stored status, as of the last count",
    ["provider", "status"],
    registry=registry,
)


def set_status_counts(counts: dict[str, dict[str, int]]) -> None:
    # Clear first, so a (provider, status) pair that dropped to zero does not keep its old figure.
    CONNECTIONS.clear()
    for provider, statuses in counts.items():
        for status, count in statuses.items():
            CONNECTIONS.labels(provider, status).set(count)

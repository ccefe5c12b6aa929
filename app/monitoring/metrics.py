"""Prometheus figures of the monitoring loop, registered in the app's one metrics registry.

Each gauge says how several worker processes combine (`multiprocess_mode`, used only with
`junction serve --workers N`): loops running add up; the others are the latest any worker wrote.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from app.core.metrics import MULTIPROCESS, registry
from app.tokens.providers import BUILTIN_PROVIDERS

# Custom providers are named by tenants: as label values they would publish those names on
# /metrics and let tenants grow the label cardinality at will. They count under one value.
CUSTOM_PROVIDER_LABEL = "custom"

MONITOR_RUNNING = Gauge(
    "junction_monitor_running",
    "1 while this instance's monitoring loop runs (loops running, with --workers N)",
    registry=registry,
    multiprocess_mode="livesum",
)
LAST_TICK_TIMESTAMP = Gauge(
    "junction_monitor_last_tick_timestamp_seconds",
    "Unix time the last completed tick started",
    registry=registry,
    multiprocess_mode="livemax",
)
LAST_TICK_DURATION = Gauge(
    "junction_monitor_last_tick_duration_seconds",
    "Duration of the last completed tick (leasing to the last refresh finished)",
    registry=registry,
    multiprocess_mode="livemostrecent",
)
LAST_TICK_CONNECTIONS = Gauge(
    "junction_monitor_last_tick_connections",
    "Connections of the last completed tick by outcome (due, refreshed, failed, skipped)",
    ["outcome"],
    registry=registry,
    multiprocess_mode="livemostrecent",
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
    multiprocess_mode="livemostrecent",
)
_counted_pairs: set[tuple[str, str]] = set()


def provider_label(provider: str) -> str:
    """A provider as a label value: a built-in provider's name, or "custom"."""
    return provider if provider in BUILTIN_PROVIDERS else CUSTOM_PROVIDER_LABEL


def count_refresh(provider: str, result: str) -> None:
    REFRESHES.labels(provider_label(provider), result).inc()


def set_status_counts(counts: dict[str, dict[str, int]]) -> None:
    folded: dict[tuple[str, str], int] = {}
    for provider, statuses in counts.items():
        label = provider_label(provider)
        for status, count in statuses.items():
            folded[label, status] = folded.get((label, status), 0) + count
    # A (provider, status) pair that dropped to zero must not keep its old figure: cleared in
    # memory; in multiprocess mode its file keeps the value, so it is written as 0 instead.
    if MULTIPROCESS:
        for label, status in _counted_pairs - folded.keys():
            CONNECTIONS.labels(label, status).set(0)
    else:
        CONNECTIONS.clear()
    for (label, status), count in folded.items():
        CONNECTIONS.labels(label, status).set(count)
    _counted_pairs.update(folded)

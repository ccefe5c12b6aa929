"""Prometheus figures of the tokens domain, registered in the app's one metrics registry."""

from __future__ import annotations

from prometheus_client import Histogram

from app.core.metrics import registry

# The window in which a replica's death loses a rotated refresh token (docs/tokens.md).
REFRESH_COMMIT_WINDOW = Histogram(
    "junction_token_refresh_commit_window_seconds",
    "Time from a provider's refresh answer being received to the commit that stores it returning",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=registry,
)

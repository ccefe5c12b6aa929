"""The request figures, counted in plain numbers, render as prometheus_client's own metrics do."""

from __future__ import annotations

import re

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.core import metrics


def _families(text: str) -> dict[str, list[str]]:
    """Each family's lines (HELP, TYPE, samples), without the optional `_created` series."""
    families: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
        if "_created" not in line:
            families.setdefault(current, []).append(line)
    return families


def test_request_figures_render_as_prometheus_client_metrics() -> None:
    reference = CollectorRegistry()
    requests = Counter(
        "junction_http_requests",
        "HTTP requests by route template, method and status",
        ["route", "method", "status"],
        registry=reference,
    )
    latency = Histogram(
        "junction_http_request_duration_seconds",
        "HTTP request latency by route template",
        ["route", "method"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=reference,
    )
    figures = metrics._RequestFigures()
    # On a bound, between bounds, past the last one; two routes and two statuses.
    for route, status, elapsed in [
        ("/a", 200, 0.0005),
        ("/a", 200, 0.001),
        ("/a", 404, 0.003),
        ("/b", 200, 0.2),
        ("/b", 200, 11.0),
        ("/a", 200, 0.001),
    ]:
        requests.labels(route, "GET", str(status)).inc()
        latency.labels(route, "GET").observe(elapsed)
        figures.count(route, "GET", status, elapsed)
    ours = CollectorRegistry()
    ours.register(figures)
    assert _families(generate_latest(ours).decode()) == _families(
        generate_latest(reference).decode()
    )


async def _duration_count(client: httpx.AsyncClient, route: str) -> float:
    text = (await client.get("/metrics")).text
    found = re.search(
        r'junction_http_request_duration_seconds_count\{method="GET",route="'
        + re.escape(route)
        + r'"\} ([0-9.e+]+)',
        text,
    )
    return float(found.group(1)) if found else 0.0


async def test_every_request_is_timed_under_its_route(client: httpx.AsyncClient) -> None:
    before = await _duration_count(client, "/livez")
    for _ in range(3):
        await client.get("/livez")
    assert await _duration_count(client, "/livez") == before + 3

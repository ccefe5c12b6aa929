"""Prometheus metrics: request counts and latencies by route, database pool and cache figures.

Each request is counted by its context (app/core/request_context.py) through `REQUEST_FIGURES`.

With several worker processes (`junction serve --workers N`) each worker writes its figures to
files in `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode) and a scrape of any
worker reads them all: counters and histograms add up across workers, each gauge combines its
workers as its `multiprocess_mode` says, and the process figures carry a `pid` label per worker.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import glob
import hmac
import itertools
import logging
import os
import re
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.core.errors import Unauthorized
from app.core.metrics_files import MULTIPROCESS_DIR_ENV

if TYPE_CHECKING:  # the cache counts its operations here: no import at run time
    from app.core.cache import Cache

# Read once, as prometheus_client does when it is imported: a process either writes its figures
# to the directory (every worker of `junction serve --workers N`) or keeps them in memory.
MULTIPROCESS = bool(os.environ.get(MULTIPROCESS_DIR_ENV))
# How often a worker copies its point-in-time figures (pool, cache reads) to its files, so a
# scrape answered by another worker sees them at most this old. Requests count at once.
PUBLISH_INTERVAL_S = 2.0

registry = CollectorRegistry(auto_describe=True)

_REQUESTS_NAME = "junction_http_requests"
_REQUESTS_DOC = "HTTP requests by route template, method and status"
_LATENCY_NAME = "junction_http_request_duration_seconds"
_LATENCY_DOC = "HTTP request latency by route template"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Each bound's `le` label as prometheus_client writes it ("1.0", not "1").
_BUCKET_LABELS = [floatToGoString(bound) for bound in _LATENCY_BUCKETS]  # type: ignore[no-untyped-call]
DB_POOL = Gauge(
    "junction_db_pool_connections",
    "Database pool connections by state (summed over the live worker processes)",
    ["state"],
    registry=registry,
    multiprocess_mode="livesum",
)
WORKER_STARTED = Gauge(
    "junction_worker_start_time_seconds",
    "Unix time each live worker process started serving (one series per pid with --workers N)",
    registry=registry,
    multiprocess_mode="liveall",
)


class CacheCounts:
    """Hits and misses of one cache tier instance, as plain ints (see `_CacheOperations`)."""

    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0


class _CacheOperations:
    """`junction_cache_operations_total{tier, result}`: a counter of real cache hits and misses.

    The tiers count in plain ints where the hit or miss happens and the registry sums them at
    scrape: a local hit is the whole cost of a cached read, and `Counter.inc()` (a lock) costs
    about eight times an int increment. The counts outlive their tier, so the sum never falls.
    """

    NAME = "junction_cache_operations"
    DOCUMENTATION = "Cache reads since start by tier (local, shared) and result (hit, miss, error)"

    def __init__(self) -> None:
        self._counted: dict[str, list[Any]] = {}
        # Multiprocess mode: the totals already added to the shared counter, by (tier, result).
        self._published: dict[tuple[str, str], int] = {}
        self._shared = (
            Counter(self.NAME, self.DOCUMENTATION, ["tier", "result"], registry=None)
            if MULTIPROCESS
            else None
        )

    def track(self, tier: str, counts: Any) -> None:
        self._counted.setdefault(tier, []).append(counts)

    def totals(self) -> dict[tuple[str, str], int]:
        totals: dict[tuple[str, str], int] = {}
        for tier, counted in sorted(self._counted.items()):
            totals[tier, "hit"] = sum(c.hits for c in counted)
            totals[tier, "miss"] = sum(c.misses for c in counted)
            errors = [c.errors for c in counted if hasattr(c, "errors")]
            if errors:
                totals[tier, "error"] = sum(errors)
        return totals

    def publish(self) -> None:
        """Multiprocess mode: add what this worker counted since the last call to the counter
        the workers share (the plain ints stay the fast path)."""
        if self._shared is None:
            return
        for key, total in self.totals().items():
            delta = total - self._published.get(key, 0)
            if delta > 0:
                self._shared.labels(*key).inc(delta)
                self._published[key] = total

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.NAME, self.DOCUMENTATION, labels=["tier", "result"])
        for (tier, result), total in self.totals().items():
            family.add_metric([tier, result], total)
        yield family


CACHE_OPS = _CacheOperations()
if not MULTIPROCESS:  # with workers, the shared counter is read from the files instead
    registry.register(CACHE_OPS)

C = TypeVar("C")


def count_cache_operations(tier: str, counts: C) -> C:
    """Export `counts` (int `hits`, `misses` and optionally `errors`) under `tier`; returns it."""
    CACHE_OPS.track(tier, counts)
    return counts


CACHE_UP = Gauge(
    "junction_cache_available",
    "1 when the shared cache answers (every live worker's, with --workers N)",
    registry=registry,
    multiprocess_mode="livemin",
)

CACHE_COHERENT = Gauge(
    "junction_cache_coherent",
    "1 while this process trusts its local cache tiers (its coherence lease is current); 0: "
    "cached reads go to Redis or the database",
    registry=registry,
    multiprocess_mode="livemin",
)
CACHE_LAPSES = Counter(
    "junction_cache_coherence_lapses",
    "Times this process stopped trusting its local cache tiers and regained trust (a missed "
    "heartbeat lease: Redis stalled or unreachable, or this process's event loop stalled)",
    registry=registry,
)
# What of each cache's `lapses` the counter has already been given (published at scrape).
_LAPSES_PUBLISHED: weakref.WeakKeyDictionary[Cache, int] = weakref.WeakKeyDictionary()


class _RequestFigures:
    """`junction_http_requests_total` and `junction_http_request_duration_seconds`, counted in
    plain ints and floats and turned into Prometheus families at scrape.

    Every request counts here, the hot reads included: `Counter.inc()` and `Histogram.observe()`
    take a lock per value (three per request) and cost ~3 µs of a cached read that costs ~30, the
    plain version ~0.5. With several workers (multiprocess mode) the figures must reach the shared
    files at once, so each request goes to prometheus_client's file-backed metrics instead.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        # By (route, method): the count in each bucket (not cumulative; the last is +Inf), and
        # the sum of the latencies.
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = {}
        self._shared: tuple[Counter, Histogram] | None = None
        self._shared_children: dict[tuple[Any, ...], Any] = {}
        if MULTIPROCESS:
            self._shared = (
                Counter(
                    _REQUESTS_NAME, _REQUESTS_DOC, ["route", "method", "status"], registry=None
                ),
                Histogram(
                    _LATENCY_NAME,
                    _LATENCY_DOC,
                    ["route", "method"],
                    buckets=_LATENCY_BUCKETS,
                    registry=None,
                ),
            )

    def count(self, template: str, method: str, status: int, elapsed: float) -> None:
        if self._shared is not None:
            self._count_shared(template, method, status, elapsed)
            return
        key = (template, method, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        route = (template, method)
        buckets = self._buckets.get(route)
        if buckets is None:
            buckets = self._buckets[route] = [0] * (len(_LATENCY_BUCKETS) + 1)
            self._sums[route] = 0.0
        buckets[bisect.bisect_left(_LATENCY_BUCKETS, elapsed)] += 1
        self._sums[route] += elapsed

    def _count_shared(self, template: str, method: str, status: int, elapsed: float) -> None:
        # The labelled children, kept by their labels: `labels()` takes a lock and builds a key.
        assert self._shared is not None
        counter = self._shared_children.get((template, method, status))
        if counter is None:
            counter = self._shared[0].labels(template, method, str(status))
            self._shared_children[(template, method, status)] = counter
        counter.inc()
        latency = self._shared_children.get((template, method))
        if latency is None:
            latency = self._shared[1].labels(template, method)
            self._shared_children[(template, method)] = latency
        latency.observe(elapsed)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            _REQUESTS_NAME, _REQUESTS_DOC, labels=["route", "method", "status"]
        )
        for (template, method, status), total in list(self._counts.items()):
            requests.add_metric([template, method, str(status)], total)
        yield requests
        latency = HistogramMetricFamily(_LATENCY_NAME, _LATENCY_DOC, labels=["route", "method"])
        bounds = [*_BUCKET_LABELS, "+Inf"]
        for route, counted in list(self._buckets.items()):
            cumulative = list(itertools.accumulate(counted))
            latency.add_metric(
                list(route), list(zip(bounds, cumulative, strict=True)), self._sums[route]
            )
        yield latency


REQUEST_FIGURES = _RequestFigures()
if not MULTIPROCESS:  # with workers, the figures are read from the files instead
    registry.register(REQUEST_FIGURES)


def require_scrape_token(authorization: str | None, expected: str | None) -> None:
    """Raise `Unauthorized` unless `expected` is unset or `authorization` is `Bearer <expected>`.

    The comparison takes the same time wherever the first difference is (no timing oracle).
    """
    if expected is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <METRICS_BEARER_TOKEN>'")


def _publish_figures(engine: AsyncEngine, cache: Cache) -> None:
    """Copy the point-in-time figures of this process's clients into its gauges."""
    pool = engine.pool
    # Only a queue pool counts its connections (SQLite's pools do not).
    if isinstance(pool, QueuePool):
        DB_POOL.labels("checked_out").set(pool.checkedout())
        DB_POOL.labels("idle").set(pool.checkedin())
        DB_POOL.labels("size").set(pool.size())
        DB_POOL.labels("overflow").set(max(0, pool.overflow()))
    CACHE_UP.set(1 if cache.available else 0)
    CACHE_COHERENT.set(1 if cache.coherent else 0)
    published = _LAPSES_PUBLISHED.get(cache, 0)
    if cache.lapses > published:
        CACHE_LAPSES.inc(cache.lapses - published)
        _LAPSES_PUBLISHED[cache] = cache.lapses
    CACHE_OPS.publish()


_LIVE_GAUGE_FILE = re.compile(r"gauge_liveall_(\d+)\.db$")


class _WorkerProcesses:
    """The standard `process_*` figures of every live worker, read from /proc at scrape time,
    each with a `pid` label (one process's collector would describe only the scraped worker)."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def _live_pids(self) -> list[int]:
        pids = []
        # A worker that stops cleanly removes its live-gauge file; one that crashed leaves it.
        for path in glob.glob(os.path.join(self._directory, "gauge_liveall_*.db")):
            match = _LIVE_GAUGE_FILE.search(path)
            if match and _running(int(match.group(1))):
                pids.append(int(match.group(1)))
        return sorted(pids)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self._live_pids():
            one = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for metric in one.collect():
                family = families.setdefault(
                    metric.name, Metric(metric.name, metric.documentation, metric.type)
                )
                for sample in metric.samples:
                    family.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from families.values()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def _scrape_registry() -> CollectorRegistry:
    if not MULTIPROCESS:
        return registry
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    combined.register(_WorkerProcesses(os.environ[MULTIPROCESS_DIR_ENV]))
    return combined


if not MULTIPROCESS:
    ProcessCollector(registry=registry)
_SCRAPED = _scrape_registry()


def render_metrics(engine: AsyncEngine, cache: Cache) -> tuple[bytes, str]:
    """Collect the point-in-time gauges from the app's clients, then render everything (every
    worker's, in multiprocess mode)."""
    _publish_figures(engine, cache)
    return generate_latest(_SCRAPED), CONTENT_TYPE_LATEST


@contextlib.asynccontextmanager
async def worker_figures(engine: AsyncEngine, cache: Cache) -> AsyncIterator[None]:
    """For the app's lifespan: in multiprocess mode, publish this worker's point-in-time figures
    every `PUBLISH_INTERVAL_S` (a scrape may reach another worker), and drop its live gauges
    when it stops."""
    WORKER_STARTED.set(time.time())
    if not MULTIPROCESS:
        yield
        return

    async def publish_periodically() -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            try:
                _publish_figures(engine, cache)
            except Exception:  # figures must never stop the worker
                logging.getLogger("junction").exception("publishing worker metrics failed")

    task = asyncio.create_task(publish_periodically())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

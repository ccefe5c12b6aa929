"""/metrics under `junction serve --workers 2`: every worker's figures in every scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.metrics_files import MULTIPROCESS_DIR_ENV, multiprocess_directory
from tests.conftest import IS_POSTGRES, REDIS_URL
from tests.replica_server import ReplicaServer

WORKERS = 2
REQUESTS = 40


@pytest.fixture
def two_workers(database_url: str, request: pytest.FixtureRequest) -> Iterator[ReplicaServer]:
    # Several workers need Redis: the machine's on PostgreSQL, one of the test's own on SQLite.
    if IS_POSTGRES:
        redis_url = REDIS_URL
    else:
        server: tuple[subprocess.Popen[bytes], int] = request.getfixturevalue("redis_server")
        redis_url = f"redis://127.0.0.1:{server[1]}/0"
    replica = ReplicaServer(database_url, redis_url, junction_serve=True, workers=WORKERS)
    yield replica
    replica.stop()


def _scrape(client: httpx.Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _livez_count(samples: dict[str, list[tuple[dict[str, str], float]]]) -> float:
    return sum(
        value
        for labels, value in samples.get("junction_http_requests_total", [])
        if labels["route"] == "/livez"
    )


def _worker_pids(samples: dict[str, list[tuple[dict[str, str], float]]]) -> set[str]:
    return {labels.get("pid", "") for labels, _ in samples.get("process_resident_memory_bytes", [])}


def _new_connection_each_time(base_url: str) -> httpx.Client:
    # No keep-alive: each request is accepted anew, by whichever worker the kernel picks.
    return httpx.Client(base_url=base_url, limits=httpx.Limits(max_keepalive_connections=0))


def test_every_scrape_adds_up_the_requests_of_every_worker(two_workers: ReplicaServer) -> None:
    with _new_connection_each_time(two_workers.base_url) as client:
        # Both workers have started once both report their process figures.
        for _ in range(200):
            samples = _scrape(client)
            if len(_worker_pids(samples)) == WORKERS:
                break
        assert len(_worker_pids(samples)) == WORKERS
        before = _livez_count(samples)

        for _ in range(REQUESTS):
            assert client.get("/livez").status_code == 200

        # A worker counts a request just after answering it, so the last one may lag a scrape.
        totals = []
        for _ in range(50):
            totals.append(_livez_count(_scrape(client)))
            if totals[-1] == before + REQUESTS and len(totals) >= 6:
                break
        assert totals[-1] == before + REQUESTS
        assert all(total <= before + REQUESTS for total in totals)
        # The scrapes themselves are counted too, by whichever worker answered each one.
        scrapes = _scrape(client)["junction_http_requests_total"]
        assert sum(v for labels, v in scrapes if labels["route"] == "/metrics") >= len(totals)


def test_process_figures_are_reported_for_each_worker(two_workers: ReplicaServer) -> None:
    with _new_connection_each_time(two_workers.base_url) as client:
        for _ in range(200):
            samples = _scrape(client)
            if len(_worker_pids(samples)) == WORKERS:
                break
    pids = _worker_pids(samples)
    assert len(pids) == WORKERS
    for name in ("process_cpu_seconds_total", "process_start_time_seconds"):
        assert {labels["pid"] for labels, _ in samples[name]} == pids
    started = {labels["pid"] for labels, _ in samples["junction_worker_start_time_seconds"]}
    assert started == pids
    # A gauge that combines its workers reports one series, not one per worker.
    assert len(samples["junction_cache_available"]) == 1


def test_each_start_gets_a_fresh_metrics_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROCESS_DIR_ENV, str(tmp_path))
    (tmp_path / "counter_1.db").write_bytes(b"left by an earlier start")
    with multiprocess_directory(workers=2) as first:
        assert first is not None
        assert os.environ[MULTIPROCESS_DIR_ENV] == first
        assert Path(first).parent == tmp_path
        assert list(Path(first).iterdir()) == []
    with multiprocess_directory(workers=2) as second:
        assert second != first
    assert not Path(first).exists()
    assert os.environ[MULTIPROCESS_DIR_ENV] == str(tmp_path)


def test_serve_sets_the_directory_before_prometheus_client_is_imported() -> None:
    # prometheus_client chooses file-backed values when it is imported: `junction serve` must
    # not import it before the directory is in the environment.
    code = (
        "import sys, app.cli, app.core.metrics_files; "
        "sys.exit(1 if 'prometheus_client' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_one_worker_keeps_its_figures_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR_ENV, raising=False)
    with multiprocess_directory(workers=1) as directory:
        assert directory is None
        assert MULTIPROCESS_DIR_ENV not in os.environ

"""Fixtures of the core tests: a Redis server a test may kill."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import free_port


@pytest.fixture
def redis_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A Redis server of this test's own, so the test can kill it."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required for this test"
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield process, port
    process.kill()
    process.wait()

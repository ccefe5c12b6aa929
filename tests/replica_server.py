"""A Junction replica served by uvicorn in a process of its own, for tests that pause one (SIGSTOP)
and talk to it over HTTP (tests/tokens/replica_process.py instead drives an app in a script)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


class ReplicaServer:
    """`app.main:app` under uvicorn; with `junction_serve=True`, started as `junction serve`
    starts it (its own uvicorn options: head limit, no server banner)."""

    def __init__(
        self,
        database_url: str,
        redis_url: str | None,
        *,
        junction_serve: bool = False,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url or "",
            "MONITOR_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            **{name.upper(): value for name, value in settings.items()},
        }
        command = (
            ["-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            if junction_serve
            else ["-m", "uvicorn", "app.main:app", "--port", str(self.port)]
        )
        self.process = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Generous: on a loaded machine (the suite shares two cores) start-up alone takes ~15 s.
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, "the replica exited during start-up"
            try:
                if httpx.get(self.base_url + "/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the replica did not start"
            time.sleep(0.05)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

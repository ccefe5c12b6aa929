"""A PostgreSQL cluster of a test's own (the machine's `initdb`/`pg_ctl`), for tests that stop,
restart or pause the database; the shared server is never touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

_RUN_AS = ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindir() -> Path:
    pg_config = shutil.which("pg_config")
    assert pg_config, "pg_config (PostgreSQL's server binaries) is required for this test"
    return Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip())


class PrivatePostgres:
    """`start()`, `stop(mode)`, `restart()`; the data directory is removed by `remove()`."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="junction-pg-"))
        shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        self.port = _free_port()
        self._pg(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, program: str, *args: str, check: bool = True) -> None:
        command = [*_RUN_AS, str(self.bindir / program), *args]
        subprocess.run(command, check=check, capture_output=True, timeout=60)

    def _ctl(self, *args: str, check: bool = True) -> None:
        self._pg("pg_ctl", "-D", str(self.data), *args, check=check)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        self._ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        self._ctl("-m", mode, "-w" if wait else "-W", "stop", check=wait)

    def remove(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

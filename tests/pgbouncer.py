"""A PgBouncer of a test's own, in transaction pooling mode, in front of the machine's PostgreSQL.

The Debian package `pgbouncer` (`make test` installs it when it can). Started on a free port with
its own ini and user list in a temporary directory, as the `postgres` user (PgBouncer refuses to
run as root), with a small server pool so that client connections really share server
connections, transaction by transaction.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

_RUN_AS = ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    assert found, (
        "pgbouncer is not installed: the PgBouncer test needs the Debian package "
        "(`apt-get install -y pgbouncer`; `make test-postgres` installs it when it can)"
    )
    return found


class PgBouncer:
    """`start()` / `stop()`; `url(database)` is an asyncpg URL through it."""

    def __init__(self, upstream_url: str, *, server_pool_size: int = 2) -> None:
        upstream = urlsplit(upstream_url)
        self.binary = pgbouncer_binary()
        self.root = Path(tempfile.mkdtemp(prefix="junction-pgbouncer-"))
        shutil.chown(self.root, "postgres")
        self.port = _free_port()
        self.user = upstream.username or "postgres"
        (self.root / "userlist.txt").write_text(f'"{self.user}" ""\n')
        # auth_type trust: PgBouncer checks only that the user is listed; the upstream server
        # is the machine's PostgreSQL with trust authentication for local addresses.
        self.ini = self.root / "pgbouncer.ini"
        self.ini.write_text(
            "[databases]\n"
            f"* = host={upstream.hostname or '127.0.0.1'} port={upstream.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {server_pool_size}\n"
            "max_client_conn = 200\n"
            f"admin_users = {self.user}\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgBouncer:
        self.process = subprocess.Popen(
            [*_RUN_AS, self.binary, str(self.ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"pgbouncer exited at start-up: {error}{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                assert time.monotonic() < deadline, f"pgbouncer did not start: {self.log()}"
                time.sleep(0.05)

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)

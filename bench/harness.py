"""What a benchmark section gets: a running service on PostgreSQL + Redis and a load generator.

Load comes from wrk when it is installed (one thread, so the one-worker server keeps a core of
its own), otherwise from a small asyncio generator; both report requests/s and p50/p99 latency.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.auth import mint_token
from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    tool: str = "wrk"


@dataclass
class Report:
    section: str
    label: str
    value: float
    unit: str
    target: str | None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _latency_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass
class BenchContext:
    base_url: str
    database_url: str
    redis_url: str
    settings: Settings
    base_env: dict[str, str]
    section: str = ""
    reports: list[Report] = field(default_factory=list)

    def token(self, tenants: list[str], roles: list[str] | None = None, ttl_s: int = 7200) -> str:
        return mint_token(self.settings, sub="bench", tenants=tenants, roles=roles, ttl_s=ttl_s)

    def database(self, name: str) -> str:
        """The URL of another database on the bench's PostgreSQL server."""
        return self.database_url.rsplit("/", 1)[0] + f"/{name}"

    async def admin(self, statement: str) -> None:
        """One statement on the server's `postgres` database, outside a transaction (CREATE or
        DROP DATABASE)."""
        engine = create_async_engine(
            self.database("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    def report(self, label: str, value: float, unit: str = "", target: str | None = None) -> None:
        self.reports.append(Report(self.section, label, value, unit, target))
        shown = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        suffix = f"   (target {target})" if target else ""
        print(f"  {label:<62} {shown:>12} {unit}{suffix}", flush=True)

    async def load(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
        duration_s: float = 5.0,
        connections: int = 32,
        base_url: str | None = None,
        warmup_s: float = 1.0,
    ) -> LoadResult:
        url = (base_url or self.base_url) + path
        raw = body.encode() if isinstance(body, str) else body
        spec = _Load(method, url, headers or {}, raw, duration_s, connections)
        if warmup_s > 0:
            await _run_load(replace(spec, duration_s=warmup_s))
        return await _run_load(spec)

    async def paired(
        self,
        ours: str,
        headers: dict[str, str],
        bare: str,
        *,
        base_url: str | None = None,
        rounds: int = 5,
        round_s: float = 3.0,
    ) -> tuple[LoadResult, LoadResult, float]:
        """GET `ours` (with `headers`) and `bare` in alternating rounds: the median round's
        figures and its ratio ours / bare.

        One long run each is at the mercy of whatever else the machine does meanwhile; paired
        rounds share that noise, and the median ignores a disturbed round.
        """
        pairs: list[tuple[LoadResult, LoadResult]] = []
        for round_number in range(rounds):
            order = ("ours", "bare") if round_number % 2 == 0 else ("bare", "ours")
            results: dict[str, LoadResult] = {}
            for which in order:
                path, sent = (ours, headers) if which == "ours" else (bare, {})
                results[which] = await self.load(
                    "GET", path, headers=sent, duration_s=round_s, base_url=base_url
                )
            pairs.append((results["ours"], results["bare"]))
        pairs.sort(key=lambda pair: pair[0].requests_per_s / pair[1].requests_per_s)
        ours_result, bare_result = pairs[len(pairs) // 2]
        return ours_result, bare_result, ours_result.requests_per_s / bare_result.requests_per_s

    async def paired_across(
        self,
        ours: tuple[str, str, dict[str, str]],
        floor: tuple[str, str],
        *,
        rounds: int = 5,
        round_s: float = 3.0,
    ) -> tuple[LoadResult, LoadResult, float]:
        """As `paired`, with each side on its own server: `ours` is (base URL, path, headers),
        `floor` (base URL, path) is asked with no headers."""
        pairs: list[tuple[LoadResult, LoadResult]] = []
        for round_number in range(rounds):
            order = ("ours", "floor") if round_number % 2 == 0 else ("floor", "ours")
            results: dict[str, LoadResult] = {}
            for which in order:
                if which == "ours":
                    base_url, path, sent = ours
                else:
                    (base_url, path), sent = floor, {}
                results[which] = await self.load(
                    "GET", path, headers=sent, duration_s=round_s, base_url=base_url
                )
            pairs.append((results["ours"], results["floor"]))
        pairs.sort(key=lambda pair: pair[0].requests_per_s / pair[1].requests_per_s)
        ours_result, floor_result = pairs[len(pairs) // 2]
        return ours_result, floor_result, ours_result.requests_per_s / floor_result.requests_per_s

    @asynccontextmanager
    async def server(self, env: dict[str, str]) -> AsyncIterator[str]:
        """Another service process on the same database and Redis, with extra settings."""
        async with run_server({**self.base_env, **env}) as base_url:
            yield base_url


@dataclass(frozen=True)
class _Load:
    """One load run: the request wrk (or the Python generator) repeats, for how long, how wide."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    duration_s: float
    connections: int


async def _run_load(load: _Load) -> LoadResult:
    if shutil.which("wrk"):
        return await asyncio.to_thread(_wrk, load)
    return await _python_load(load)


def _wrk(load: _Load) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "request.lua"
        lines = [f"wrk.method = {_lua_string(load.method)}"]
        for name, value in load.headers.items():
            lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
        if load.body is not None:
            body_path = Path(tmp) / "body"
            body_path.write_bytes(load.body)
            lines.append(f'local f = io.open({_lua_string(str(body_path))}, "rb")')
            lines.append("wrk.body = f:read('*a')")
            lines.append("f:close()")
        script.write_text("\n".join(lines) + "\n")
        output = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{load.connections}",
                f"-d{max(1, round(load.duration_s))}s",
                "--latency",
                "-s",
                str(script),
                load.url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", output)
    p99 = re.search(r"\s99%\s+(\S+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return LoadResult(
        requests_per_s=rps,
        p50_ms=_latency_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_latency_ms(p99.group(1)) if p99 else float("nan"),
        errors=errors,
        requests=int(total.group(1)) if total else 0,
        tool="wrk",
    )


async def _python_load(load: _Load) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + load.duration_s
    limits = httpx.Limits(
        max_connections=load.connections, max_keepalive_connections=load.connections
    )
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.request(
                        load.method, load.url, headers=load.headers, content=load.body
                    )
                    if response.status_code >= 400:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(load.connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return LoadResult(
        len(latencies) / elapsed, pct(0.5), pct(0.99), errors, len(latencies), "python"
    )


@asynccontextmanager
async def run_raw_asgi() -> AsyncIterator[str]:
    """The raw ASGI app of bench/raw_asgi.py, served as the service is (one uvicorn worker)."""
    async with run_server({}, target="bench.raw_asgi:app") as base_url:
        yield base_url


@asynccontextmanager
async def run_server(env: dict[str, str], target: str = "bench.server:app") -> AsyncIterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):  # 60 s: start-up alone takes ~15 s on a loaded machine
                if process.poll() is not None:
                    raise RuntimeError("benchmark server exited during start-up")
                try:
                    if (await client.get(base_url + "/livez")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("benchmark server did not start")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def sections_available() -> list[str]:
    import pkgutil

    from bench import sections

    return sorted(m.name for m in pkgutil.iter_modules(sections.__path__))


def describe(ctx: BenchContext) -> dict[str, Any]:
    return {"base_url": ctx.base_url, "database_url": ctx.database_url}

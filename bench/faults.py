"""`make bench-faults`: two replicas under a mixed load while Redis is killed, Redis is stalled and
PostgreSQL restarts; prints what clients saw.

Everything runs on servers of the run's own (a private PostgreSQL cluster and a private
`redis-server`, on free ports), never the machine's shared ones. Writers POST new contents to a
few configurations through either replica; readers GET the documents through both. Figures:
- requests, and the non-2xx answers by status (target: none but 503);
- stale reads: a read that began after a write of version v was acknowledged and returned an
  older version of that configuration (target 0);
- lost writes: an acknowledged version missing from the configuration's history at the end, or a
  final version older than the newest acknowledged one (target 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx

from app.core import migrations
from app.core.auth import mint_token
from app.core.config import Settings
from bench.harness import free_port, run_server
from tests.private_postgres import PrivatePostgres

TENANT = "faults"
CONFIGS = [f"provider-{n}" for n in range(4)]


class PrivateRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required"
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.2)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    stale_reads: int = 0
    # config name -> acknowledged versions, and the newest with the time it was acknowledged
    acknowledged: dict[str, set[int]] = field(default_factory=dict)
    newest: dict[str, tuple[int, float]] = field(default_factory=dict)

    def acknowledge(self, name: str, version: int) -> None:
        self.acknowledged.setdefault(name, set()).add(version)
        if version > self.newest.get(name, (0, 0.0))[0]:
            self.newest[name] = (version, time.monotonic())


def _versions(document: dict[str, object]) -> dict[str, int]:
    entries = document.get("map_providers") or []
    assert isinstance(entries, list)
    return {str(e["provider_name"]): int(e["version"]) for e in entries if e.get("id")}


async def _writer(
    client: httpx.AsyncClient,
    base: str,
    token: str,
    name: str,
    tally: Tally,
    stop: asyncio.Event,
    writing: asyncio.Event,
) -> None:
    n = 0
    while not stop.is_set():
        if not writing.is_set():
            await asyncio.sleep(0.02)
            continue
        n += 1
        body = {"map_providers": [{"provider_name": name, "config_data": {"n": n, "at": base}}]}
        try:
            response = await client.post(
                f"{base}/config/{TENANT}", json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError:
            tally.transport_errors += 1
            await asyncio.sleep(0.05)
            continue
        tally.statuses[response.status_code] += 1
        if response.status_code == 200:
            tally.acknowledge(name, _versions(response.json())[name])
        else:
            await asyncio.sleep(0.05)


async def _reader(
    client: httpx.AsyncClient, base: str, token: str, tally: Tally, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        # What had been acknowledged before this read began: it must not see anything older.
        floor = {name: version for name, (version, _) in tally.newest.items()}
        try:
            response = await client.get(
                f"{base}/config/{TENANT}", headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError:
            tally.transport_errors += 1
            await asyncio.sleep(0.05)
            continue
        tally.statuses[response.status_code] += 1
        if response.status_code != 200:
            await asyncio.sleep(0.05)
            continue
        seen = _versions(response.json())
        for name, version in floor.items():
            if seen.get(name, 0) < version:
                tally.stale_reads += 1


@asynccontextmanager
async def _replicas(env: dict[str, str]) -> AsyncIterator[list[str]]:
    async with run_server(env) as first, run_server(env) as second:
        yield [first, second]


async def _lost_writes(base: str, token: str, tally: Tally) -> int:
    lost = 0
    async with httpx.AsyncClient(timeout=30) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for name, versions in tally.acknowledged.items():
            recorded: set[int] = set()
            cursor: str | None = None
            while True:
                params = {"provider_name": name, "limit": "200"}
                if cursor:
                    params["cursor"] = cursor
                page = (
                    await client.get(
                        f"{base}/config/{TENANT}/history", params=params, headers=headers
                    )
                ).json()
                recorded.update(int(item["version"]) for item in page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            lost += len(versions - recorded)
    return lost


async def _phase(label: str, seconds: float, writing: asyncio.Event, *, quiet_s: float) -> None:
    """Load for `seconds`, then reads only for `quiet_s`: a replica still serving what a write
    replaced shows up as stale reads then, not hidden behind the next write's invalidation."""
    print(f"  {label}", flush=True)
    writing.set()
    await asyncio.sleep(seconds)
    writing.clear()
    await asyncio.sleep(quiet_s)


async def main(load_s: float) -> int:
    postgres = PrivatePostgres()
    redis_server = PrivateRedis()
    try:
        postgres.start()
        await asyncio.to_thread(migrations.upgrade, postgres.url)
        redis_server.start()
        env = {
            "ENVIRONMENT": "dev",
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis_server.url,
            "MONITOR_ENABLED": "false",
            "LOG_LEVEL": "ERROR",
            "DB_POOL_SIZE": "10",
        }
        settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})  # type: ignore[arg-type]
        token = mint_token(settings, sub="faults", tenants=[TENANT], roles=["service"], ttl_s=3600)
        tally = Tally()
        async with _replicas(env) as bases:
            stop = asyncio.Event()
            writing = asyncio.Event()
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(timeout=10, limits=limits) as client:
                tasks = [
                    asyncio.create_task(
                        _writer(
                            client,
                            bases[i % 2],
                            token,
                            CONFIGS[i % len(CONFIGS)],
                            tally,
                            stop,
                            writing,
                        )
                    )
                    for i in range(len(CONFIGS) * 2)
                ]
                tasks += [
                    asyncio.create_task(_reader(client, bases[i % 2], token, tally, stop))
                    for i in range(8)
                ]
                await _phase("steady load", load_s, writing, quiet_s=load_s)
                redis_server.kill()
                await _phase("redis killed", load_s, writing, quiet_s=load_s)
                redis_server.start()
                await _phase("redis back", load_s, writing, quiet_s=load_s)
                redis_server.pause()
                await _phase(
                    "redis stalled 1.5 s (writes during the stall)", 1.5, writing, quiet_s=0
                )
                redis_server.resume()
                await _phase("redis resumed (reads only)", 0, writing, quiet_s=load_s)
                await asyncio.to_thread(postgres.stop, "fast")
                await asyncio.to_thread(postgres.start)
                await _phase("postgresql restarted", load_s, writing, quiet_s=load_s)
                stop.set()
                await asyncio.gather(*tasks)
            lost = await _lost_writes(bases[0], token, tally)
        requests = sum(tally.statuses.values())
        non_2xx = {s: c for s, c in sorted(tally.statuses.items()) if not 200 <= s < 300}
        other_5xx = sum(c for s, c in non_2xx.items() if s >= 500 and s != 503)
        print(f"  requests                                  {requests:,}")
        print(f"  non-2xx by status                         {non_2xx or 'none'}")
        print(f"  transport errors                          {tally.transport_errors}")
        print(f"  stale reads after an acknowledged write   {tally.stale_reads}   (target 0)")
        print(f"  lost acknowledged writes                  {lost}   (target 0)")
        print(f"  5xx other than 503                        {other_5xx}   (target 0)")
        return 0 if (tally.stale_reads == 0 and lost == 0 and other_5xx == 0) else 1
    finally:
        redis_server.kill()
        postgres.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-s", type=float, default=3.0, help="seconds of load per phase")
    arguments = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    raise SystemExit(asyncio.run(main(arguments.phase_s)))

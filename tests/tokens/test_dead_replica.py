"""A replica killed mid-refresh must not stall the survivors, and a live one keeps what it holds.

The dead replica is a real one in a process of its own (`tests/tokens/replica_process.py`),
killed with SIGKILL while its refresh is in a provider call: its refresh lock and its monitoring
lease were taken by the service's own code, and nothing renews them once it is dead. Its provider
is a token endpoint that accepts the call and never answers, so no refresh token is spent at the
real provider (the tests' OAuth server) by the replica that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from app.core.config import Settings
from app.devtools.oauth_provider import LocalOAuthServer
from app.monitoring.lifecycle import build_monitor
from app.state import app_state
from tests.conftest import REDIS_URL, build_settings, postgres_only, running_app
from tests.oauth_fixtures import connect_branch
from tests.tokens.helpers import connection_row, read_token

pytestmark = postgres_only

PROVIDER = "google_search_console"  # built in: each replica's settings say where its token URL is
ROOT = Path(__file__).resolve().parents[2]
# Far below the old 30 s lock TTL and 120 s lease, which a survivor had to sit out.
LOCK_TTL_S = 1.5
LEASE_S = 1.5
WAIT_S = 5.0


class SilentTokenEndpoint:
    """Accepts connections, reads what comes and never answers, until the caller goes away."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.called.set()
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SilentTokenEndpoint]:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()

    @property
    def token_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/token"


def _settings(database_url: str, token_urls: dict[str, str], **overrides: Any) -> dict[str, Any]:
    return {
        "oauth_provider_overrides": {PROVIDER: token_urls},
        "token_refresh_lock_ttl_s": LOCK_TTL_S,
        "token_refresh_wait_s": WAIT_S,
        "monitor_lease_s": LEASE_S,
        **overrides,
    }


@contextlib.asynccontextmanager
async def replica_killed_mid_refresh(
    database_url: str, silent: SilentTokenEndpoint, oauth: LocalOAuthServer, **config: Any
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A replica process whose refresh is in its provider call: killed with SIGKILL on exit."""
    urls = {**oauth.provider_urls(), "token_url": silent.token_url}
    settings = _settings(database_url, urls, **config.pop("settings", {}))
    payload = {"database_url": database_url, "settings": settings, **config}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.tokens.replica_process",
        json.dumps(payload),
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.wait_for(silent.called.wait(), timeout=60)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _kill(process: asyncio.subprocess.Process) -> None:
    process.kill()  # SIGKILL: no finally block, no lock release, no lease release
    await process.wait()


def _survivor(database_url: str, oauth: LocalOAuthServer) -> Settings:
    return build_settings(database_url, **_settings(database_url, oauth.provider_urls()))


async def _connect_expired(client: Any, token: str, oauth: LocalOAuthServer) -> None:
    oauth.token_lifetime_s = 0
    await connect_branch(client, token, oauth, provider=PROVIDER)
    oauth.token_lifetime_s = 3600


async def test_a_read_after_the_refreshing_replica_is_killed_gets_a_fresh_token(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    async with (
        running_app(_survivor(database_url, oauth_server)) as (app, client),
        SilentTokenEndpoint().running() as silent,
    ):
        await _connect_expired(client, token, oauth_server)
        read = {"mode": "read", "bearer": token, "branch_id": "branch-1", "provider": PROVIDER}
        async with replica_killed_mid_refresh(database_url, silent, oauth_server, **read) as dead:
            await _kill(dead)

        # The dead owner's lock lapses within its short TTL, well inside this read's wait.
        response = await read_token(client, token, provider=PROVIDER)
        row = await connection_row(app)

    assert response.status_code == 200, response.text
    assert oauth_server.is_access_token_valid(response.json()["access_token"])
    assert oauth_server.refresh_calls == 1
    assert row.status == "active"
    assert len(oauth_server.active_grants()) == 1


async def test_a_killed_replicas_monitoring_leases_are_taken_over_once_they_lapse(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    # One refresh at a time per provider: of two due connections the dead replica refreshes one
    # (stuck in its provider call) and keeps the other queued, leased but not row-locked. One
    # pass at start, the next long after: only renewal can keep that lease alive.
    monitoring = {
        "monitor_enabled": True,
        "monitor_interval_s": 600,
        "monitor_per_provider_concurrency": 1,
    }
    async with (
        running_app(_survivor(database_url, oauth_server)) as (app, client),
        SilentTokenEndpoint().running() as silent,
    ):
        oauth_server.token_lifetime_s = 0
        first = await connect_branch(client, token, oauth_server, "branch-1", provider=PROVIDER)
        await connect_branch(
            client, token, oauth_server, "branch-2", provider=PROVIDER, client_pk=first["client_pk"]
        )
        oauth_server.token_lifetime_s = 3600
        state = app_state(app)
        survivor = build_monitor(state.settings, state.sessionmaker, state.tokens, owner="survivor")
        async with replica_killed_mid_refresh(
            database_url, silent, oauth_server, mode="monitor", settings=monitoring
        ) as dead:
            # Alive, the owner renews its leases: past twice their length they are still its own.
            await asyncio.sleep(LEASE_S * 2)
            while_alive = await survivor.run_once()
            await _kill(dead)

        # Nobody reads: only the survivor's passes can refresh them, once the dead leases and lock
        # lapse (a few seconds; the old 120 s lease would outlast this budget many times).
        refreshed = 0
        give_up_at = asyncio.get_running_loop().time() + 4 * (LEASE_S + LOCK_TTL_S)
        while refreshed < 2 and asyncio.get_running_loop().time() < give_up_at:
            refreshed += (await survivor.run_once()).refreshed
            await asyncio.sleep(0.1)
        rows = [await connection_row(app, branch) for branch in ("branch-1", "branch-2")]

    assert while_alive.due == 0
    assert refreshed == 2
    assert oauth_server.refresh_calls == 2
    assert [(row.status, row.lease_owner) for row in rows] == [("active", None)] * 2


async def test_a_slow_provider_call_keeps_its_lock_past_the_ttl_and_refreshes_once(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(database_url, token_refresh_lock_ttl_s=0.3, token_refresh_wait_s=10)
    token = make_token(roles=["service"])
    redis = aioredis.Redis.from_url(REDIS_URL)
    async with running_app(settings) as (app, first), running_app(settings) as (_, second):
        oauth_server.token_lifetime_s = 0
        await connect_branch(first, token, oauth_server)
        oauth_server.token_lifetime_s = 3600
        connected = await connection_row(app)
        lock = f"junction:tokens:refresh:{connected.id}"
        oauth_server.delay_s = 2.0  # the provider call lasts several lock TTLs

        owner_read = asyncio.create_task(read_token(first, token))
        give_up_at = asyncio.get_running_loop().time() + 30  # a failure, not a hang
        while oauth_server.refresh_calls == 0:
            assert not owner_read.done(), owner_read.result().text
            assert asyncio.get_running_loop().time() < give_up_at, "the provider was not called"
            await asyncio.sleep(0.01)
        holders = []
        other_read = asyncio.create_task(read_token(second, token))
        while True:
            assert asyncio.get_running_loop().time() < give_up_at, "the refresh never committed"
            holder = await redis.get(lock)
            # Read after the lock: a row not yet refreshed means the owner had not committed
            # (nor released) when the lock was read.
            if (await connection_row(app)).last_refreshed_at != connected.last_refreshed_at:
                break
            holders.append(holder)
            await asyncio.sleep(0.05)
        responses = [await owner_read, await other_read]
    await redis.aclose()

    assert len(holders) > 10  # sampled across the whole call, many TTLs long
    assert None not in holders and len(set(holders)) == 1  # held throughout, by its one owner
    assert [r.status_code for r in responses] == [200, 200]
    assert oauth_server.refresh_calls == 1
    assert responses[0].json()["access_token"] == responses[1].json()["access_token"]
    assert len(oauth_server.active_grants()) == 1

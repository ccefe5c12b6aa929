"""A database that is shutting down, starting up or resetting connections answers 503, never 500.

Each test runs its own PostgreSQL cluster (the shared server is never stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from app.core import migrations
from app.state import app_state
from tests.conftest import TokenFactory, bearer, build_settings, postgres_only, running_app
from tests.private_postgres import PrivatePostgres

pytestmark = postgres_only


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    cluster.start()
    migrations.upgrade(cluster.url)
    yield cluster
    cluster.remove()


@pytest.fixture
def running_cluster(private_postgres: PrivatePostgres) -> PrivatePostgres:
    """The module's cluster, started if an earlier test left it stopped."""
    with contextlib.suppress(Exception):
        private_postgres.start()
    return private_postgres


@contextlib.asynccontextmanager
async def app_on(cluster: PrivatePostgres) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = build_settings(cluster.url, redis_url=None, db_pool_size=2, db_max_overflow=0)
    async with running_app(settings) as pair:
        yield pair


async def _read_workspace(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/admin/workspaces/acme/usage", headers=bearer(token))


async def test_a_database_shutting_down_answers_503_not_500(
    running_cluster: PrivatePostgres, make_token: TokenFactory
) -> None:
    token = make_token(tenants=["acme"], roles=["admin"])
    async with app_on(running_cluster) as (app, client):
        assert (await _read_workspace(client, token)).status_code == 200
        # A held session keeps a smart shutdown in progress: new connections are then refused
        # with SQLSTATE 57P03 ("the database system is shutting down").
        held = await asyncpg.connect(host="127.0.0.1", port=running_cluster.port, user="postgres")
        try:
            running_cluster.stop("smart", wait=False)
            await asyncio.sleep(0.2)
            await app_state(app).engine.dispose()  # the next request opens a new connection
            response = await _read_workspace(client, token)
        finally:
            await held.close()
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "database_unavailable"
    assert response.headers["retry-after"]


@contextlib.contextmanager
def resetting_listener(port: int) -> Iterator[None]:
    """A listener on `port` that resets every connection it accepts (RST, not FIN)."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        server.close()


async def test_a_connection_reset_at_connect_answers_503_not_500(
    running_cluster: PrivatePostgres, make_token: TokenFactory
) -> None:
    token = make_token(tenants=["acme"], roles=["admin"])
    async with app_on(running_cluster) as (app, client):
        assert (await _read_workspace(client, token)).status_code == 200
        running_cluster.stop("fast")
        await app_state(app).engine.dispose()
        with resetting_listener(running_cluster.port):
            response = await _read_workspace(client, token)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "database_unavailable"


async def test_requests_during_a_restart_get_answers_or_503_never_500(
    running_cluster: PrivatePostgres, make_token: TokenFactory
) -> None:
    token = make_token(tenants=["acme"], roles=["admin"])
    statuses: list[int] = []
    async with app_on(running_cluster) as (_app, client):
        stop = asyncio.Event()

        async def hammer() -> None:
            while not stop.is_set():
                statuses.append((await _read_workspace(client, token)).status_code)

        workers = [asyncio.create_task(hammer()) for _ in range(4)]
        await asyncio.sleep(0.2)
        await asyncio.to_thread(running_cluster.stop, "fast")
        await asyncio.to_thread(running_cluster.start)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        after = await _read_workspace(client, token)
    assert statuses, "no request ran"
    assert set(statuses) <= {200, 404, 503}, sorted(set(statuses))
    assert after.status_code in {200, 404}

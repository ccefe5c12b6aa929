"""Test harness: the whole suite runs on SQLite + in-process cache, or on PostgreSQL + Redis.

`JUNCTION_TEST_BACKEND=sqlite|postgres` picks the backend (`make test` runs both). Each session
gets a fresh database migrated with the real Alembic chain; every test starts from empty tables
and an empty Redis database. A missing PostgreSQL or Redis fails the run; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx._transports.default
import pytest
import redis.asyncio as aioredis
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core import migrations
from app.core.auth import mint_token
from app.core.config import Settings
from app.devtools.oauth_provider import LocalOAuthServer
from app.main import create_app
from app.models import Base
from app.state import app_state

T = TypeVar("T")

BACKEND = os.environ.get("JUNCTION_TEST_BACKEND", "sqlite")
PG_ADMIN_URL = os.environ.get(
    "JUNCTION_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("JUNCTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
assert BACKEND in {"sqlite", "postgres"}, f"unknown JUNCTION_TEST_BACKEND={BACKEND}"

IS_POSTGRES = BACKEND == "postgres"
postgres_only = pytest.mark.skipif(
    not IS_POSTGRES, reason="needs PostgreSQL + Redis; runs in the postgres half of `make test`"
)


def _share_the_default_ssl_context() -> None:
    """Every `httpx.AsyncClient` with the default `verify=True` builds its own SSL context, and
    loading the CA bundle costs ~25 ms: the app's client at every start-up and each test's
    "browser" pay it hundreds of times a run. So the default one is built once per trust
    setting (httpcore already shares its own default context between pools the same way);
    any other `verify` or `cert` still gets a context of its own.
    """
    build = httpx._transports.default.create_ssl_context
    shared = functools.cache(build)

    def create_ssl_context(
        verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is True and cert is None:
            return shared(trust_env=trust_env)
        return build(verify=verify, cert=cert, trust_env=trust_env)

    httpx._transports.default.create_ssl_context = create_ssl_context  # type: ignore[assignment]


_share_the_default_ssl_context()


def pytest_report_header() -> str:
    return f"junction backend: {BACKEND}"


async def _pg_admin(statement: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for this test session, at the latest migration."""
    if IS_POSTGRES:
        name = f"junction_test_{uuid.uuid4().hex[:10]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    else:
        path = Path(tmp_path_factory.mktemp("db")) / "junction-test.db"
        url = f"sqlite+aiosqlite:///{path}"
    migrations.upgrade(url)
    yield url
    if IS_POSTGRES:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def build_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "redis_url": REDIS_URL if IS_POSTGRES else None,
        "monitor_enabled": False,
        "log_json": False,
        "log_level": "INFO",
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return build_settings(database_url)


# Children before parents, so plain deletes satisfy every foreign key.
_TABLES = [table.name for table in reversed(Base.metadata.sorted_tables)]
# PostgreSQL: one round trip that deletes every row and restarts every sequence (what
# `TRUNCATE ... RESTART IDENTITY` did). TRUNCATE swaps each table's files and cost ~0.2 s a
# test; deleting the few rows a test leaves costs a millisecond.
_EMPTY_POSTGRES = (
    "DO $$ DECLARE seq regclass; BEGIN "
    + " ".join(f"DELETE FROM {table};" for table in _TABLES)
    + " FOR seq IN SELECT oid FROM pg_class WHERE relkind = 'S'"
    " AND relnamespace = current_schema()::regnamespace"
    " LOOP PERFORM setval(seq, 1, false); END LOOP; END $$"
)


async def _empty_everything(database_url: str) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            if IS_POSTGRES:
                await conn.execute(text(_EMPTY_POSTGRES))
            else:
                for table in _TABLES:
                    await conn.execute(text(f"DELETE FROM {table}"))
    finally:
        await engine.dispose()
    if IS_POSTGRES:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            await client.flushdb()
        finally:
            await client.aclose()


@pytest.fixture(autouse=True)
async def _clean_state(database_url: str) -> AsyncIterator[None]:
    await _empty_everything(database_url)
    yield


async def _until_coherent(app: Any) -> None:
    """Start-up waits for the first heartbeat only briefly; on a loaded machine a test could then
    begin before the local tiers may serve. With the bus connected, wait for it here."""
    cache = app_state(app).cache
    deadline = time.monotonic() + 10
    while cache.shared and cache.bus_connected and not cache.coherent:
        if time.monotonic() > deadline:
            raise AssertionError("the cache bus is connected but never became coherent")
        await asyncio.sleep(0.02)


async def while_coherent(apps: Sequence[Any], attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` until one run passes with every app's local tiers trusted throughout.

    Under a loaded machine a replica can miss heartbeats for longer than its coherence lease and
    then, by design, read the database instead of its local tiers; a test of what a cached read
    does is about the other case. A run during which some app's trust lapsed is repeated (up to
    three times); its own assertions still decide the run that counts."""
    for _ in range(3):
        for app in apps:
            await _until_coherent(app)
        before = [app_state(app).cache.lapses for app in apps]
        try:
            result = await attempt()
        except AssertionError:
            if not await _lapsed(apps, before):
                raise
            continue
        if not await _lapsed(apps, before):
            return result
    raise AssertionError("the cache lease lapsed in every attempt")


async def _lapsed(apps: Sequence[Any], before: list[int]) -> bool:
    for app in apps:
        await _until_coherent(app)  # a lapse is counted when trust returns
    return [app_state(app).cache.lapses for app in apps] != before


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An app with its lifespan running, and a client that talks to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await _until_coherent(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://junction.test"
        ) as client:
            yield app, client


@pytest.fixture
async def app_and_client(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with running_app(settings) as pair:
        yield pair


@pytest.fixture
def app(app_and_client: tuple[Any, httpx.AsyncClient]) -> Any:
    return app_and_client[0]


@pytest.fixture
def client(app_and_client: tuple[Any, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_and_client[1]


@pytest.fixture
def oauth_server() -> Iterator[LocalOAuthServer]:
    """A fresh local authorization server per test, on 127.0.0.1:<free port>."""
    server = LocalOAuthServer().start()
    try:
        yield server
    finally:
        server.stop()


TokenFactory = Callable[..., str]


@pytest.fixture
def make_token(settings: Settings) -> TokenFactory:
    def _make(
        tenants: list[str] | None = None,
        roles: list[str] | None = None,
        sub: str = "user-1",
        ttl_s: int = 3600,
        **extra: Any,
    ) -> str:
        return mint_token(
            settings,
            sub=sub,
            tenants=tenants if tenants is not None else ["tenant-a"],
            roles=roles,
            ttl_s=ttl_s,
            extra=extra or None,
        )

    return _make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def recorded_statements(app: Any, wanted: Callable[[str], bool]) -> Iterator[list[str]]:
    """The SQL statements the database driver receives while inside, those `wanted` keeps."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if wanted(statement):
            seen.append(statement)

    engine = app_state(app).engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)

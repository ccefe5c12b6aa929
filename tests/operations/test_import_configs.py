"""`junction import provider-configs`: from a real PostgreSQL database with the older service's
schema (made and dropped here) into either backend, history and all, keys sealed, misfits
reported, idempotent, and no stale document served afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.cli import main
from app.operations import import_configs
from app.operations.engine import command_app
from app.provider_configs.models import ProviderConfig
from app.state import AppState, app_state
from tests.conftest import IS_POSTGRES, PG_ADMIN_URL, TokenFactory, _pg_admin, bearer, free_port

SCHEMA = """
CREATE TABLE provider_configs (
    id uuid PRIMARY KEY, tenant_id varchar(255), provider_type varchar(50),
    provider_name varchar(100), api_key text, api_secret text, priority varchar(20),
    enabled boolean, config_data jsonb, created_at timestamp, updated_at timestamp,
    created_by varchar(255), updated_by varchar(255), version integer,
    UNIQUE (tenant_id, provider_type, provider_name));
CREATE TABLE config_versions (
    id uuid PRIMARY KEY, config_id uuid, tenant_id varchar(255), provider_type varchar(50),
    provider_name varchar(100), api_key text, api_secret text, priority varchar(20),
    enabled boolean, config_data jsonb, version integer, change_type varchar(20),
    changed_at timestamp, changed_by varchar(255), change_reason text)
"""

MAP_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
WEATHER_ID = uuid.UUID("22222222-2222-4222-8222-222222222222")
SMS_ID = uuid.UUID("33333333-3333-4333-8333-333333333333")
GONE_ID = uuid.UUID("44444444-4444-4444-8444-444444444444")
FAX_ID = uuid.UUID("55555555-5555-4555-8555-555555555555")
URGENT_ID = uuid.UUID("66666666-6666-4666-8666-666666666666")
OLD_KEY = "legacy-map-key-first-0001"
NEW_KEY = "legacy-map-key-second-0002"
T0 = datetime(2024, 3, 1, 9, 30)  # naive: the older service's timestamps carry no zone
T1 = datetime(2024, 3, 2, 10, 0)


def _config(config_id: uuid.UUID, tenant: str, kind: str, name: str, **values: Any) -> str:
    row = {
        "id": str(config_id),
        "tenant_id": tenant,
        "provider_type": kind,
        "provider_name": name,
        "api_key": None,
        "api_secret": None,
        "priority": "primary",
        "enabled": True,
        "config_data": "{}",
        "created_at": T0,
        "updated_at": T1,
        "created_by": "alice",
        "updated_by": "bob",
        "version": 1,
        **values,
    }
    return row  # type: ignore[return-value]


def _version(config_id: uuid.UUID, tenant: str, kind: str, name: str, **values: Any) -> Any:
    row = {
        "id": str(uuid.uuid4()),
        "config_id": str(config_id),
        "tenant_id": tenant,
        "provider_type": kind,
        "provider_name": name,
        "api_key": None,
        "api_secret": None,
        "priority": "primary",
        "enabled": True,
        "config_data": "{}",
        "version": 1,
        "change_type": "created",
        "changed_at": T0,
        "changed_by": "alice",
        "change_reason": None,
        **values,
    }
    return row


CONFIGS = [
    _config(MAP_ID, "tenant-a", "map", "osm", api_key=NEW_KEY, version=2,
            config_data='{"zoom": 12}'),
    _config(WEATHER_ID, "tenant-a", "weather", "owm", enabled=False, version=2,
            priority="fallback"),
    _config(SMS_ID, "tenant-b", "sms", "twilio", api_key="sms-key-0123456789",
            api_secret="sms-secret-0123456789"),
    _config(FAX_ID, "tenant-a", "fax", "old-fax"),
    _config(URGENT_ID, "tenant-a", "notification", "pager", priority="urgent"),
]  # fmt: skip
VERSIONS = [
    _version(MAP_ID, "tenant-a", "map", "osm", api_key=OLD_KEY, config_data='{"zoom": 10}'),
    _version(MAP_ID, "tenant-a", "map", "osm", api_key=NEW_KEY, config_data='{"zoom": 12}',
             version=2, change_type="updated", changed_at=T1, changed_by="bob",
             change_reason="new key from the vendor"),
    _version(WEATHER_ID, "tenant-a", "weather", "owm", priority="fallback"),
    _version(WEATHER_ID, "tenant-a", "weather", "owm", priority="fallback", enabled=False,
             version=2, change_type="disabled", changed_at=T1),
    _version(SMS_ID, "tenant-b", "sms", "twilio", api_key="sms-key-0123456789",
             api_secret="sms-secret-0123456789"),
    # A configuration the older service deleted: only its history is left.
    _version(GONE_ID, "tenant-a", "satellite", "sentinel", api_key="sat-key-0123456789"),
    _version(GONE_ID, "tenant-a", "satellite", "sentinel", api_key="sat-key-0123456789",
             version=2, change_type="deleted", changed_at=T1),
]  # fmt: skip
PLAINTEXTS = (OLD_KEY, NEW_KEY, "sms-key-0123456789", "sms-secret-0123456789")


async def _create_source(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for statement in SCHEMA.split(";"):
                await conn.execute(text(statement))
            for table, rows in (("provider_configs", CONFIGS), ("config_versions", VERSIONS)):
                for row in rows:
                    columns = ", ".join(row)
                    values = ", ".join(
                        f"CAST(:{k} AS {'jsonb' if k == 'config_data' else 'uuid'})"
                        if k in {"config_data", "id", "config_id"}
                        else f":{k}"
                        for k in row
                    )
                    await conn.execute(
                        text(f"INSERT INTO {table} ({columns}) VALUES ({values})"), row
                    )
    finally:
        await engine.dispose()


@pytest.fixture
def source_url() -> Iterator[str]:
    """The older service's database, on the machine's PostgreSQL, dropped afterwards."""
    name = f"junction_legacy_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        asyncio.run(_create_source(url))
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@asynccontextmanager
async def _importer(app: Any) -> AsyncIterator[AppState]:
    """With Redis, the import runs beside the serving app, as `junction import` would, and must
    reach its cache through the bus; without Redis only the process itself holds a cache."""
    if IS_POSTGRES:
        async with command_app(app_state(app).settings) as state:
            yield state
    else:
        yield app_state(app)


async def test_configurations_arrive_with_their_whole_history_and_sealed_keys(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory, source_url: str
) -> None:
    service = bearer(make_token(["tenant-a"], roles=["service"]))
    before = await client.get("/config/tenant-a", headers=service)
    assert before.json()["source"] == "default"  # and now cached

    async with _importer(app) as state:
        report = await import_configs.import_provider_configs(state, source_url)

    assert (report.configs, report.versions, report.already_imported) == (4, 7, 0)
    assert sorted(r.row_id for r in report.refused) == sorted([str(FAX_ID), str(URGENT_ID)])
    reasons = " ".join(r.reason for r in report.refused)
    assert "unknown provider_type 'fax'" in reasons and "bad priority 'urgent'" in reasons

    document = (await client.get("/config/tenant-a", headers=service)).json()
    assert document["source"] == "tenant"  # no stale (cached) default served
    [osm] = document["map_providers"]
    assert osm["id"] == MAP_ID.hex and osm["version"] == 2
    assert osm["config_data"] == {"zoom": 12} and osm["api_key"] == "****0002"
    assert document["weather_providers"][0]["enabled"] is False
    satellites = [p["provider_name"] for p in document["satellite_providers"]]
    assert "sentinel" not in satellites  # deleted there, so deleted here
    revealed = await client.get(
        "/config/tenant-a", params={"include_secrets": "true"}, headers=service
    )
    assert revealed.json()["map_providers"][0]["api_key"] == NEW_KEY

    history = await client.get(
        "/config/tenant-a/history", params={"config_id": MAP_ID.hex}, headers=service
    )
    items = history.json()["items"]
    assert [(i["version"], i["change_type"]) for i in items] == [(2, "updated"), (1, "created")]
    assert items[0]["changed_by"] == "bob"
    assert items[0]["change_reason"] == "new key from the vendor"
    assert items[0]["changed_at"] == "2024-03-02T10:00:00+00:00"  # naive taken as UTC
    assert items[1]["snapshot"]["config_data"] == {"zoom": 10}

    # The old key comes back with its version, as after any write.
    rolled = await client.post(
        "/config/tenant-a/rollback",
        json={"config_id": MAP_ID.hex, "version": 1, "reason": "vendor key revoked"},
        headers=service,
    )
    assert rolled.status_code == 200, rolled.text
    revealed = await client.get(
        "/config/tenant-a", params={"include_secrets": "true"}, headers=service
    )
    assert revealed.json()["map_providers"][0]["api_key"] == OLD_KEY
    # The deleted configuration is restorable too.
    restored = await client.post(
        "/config/tenant-a/rollback",
        json={"config_id": GONE_ID.hex, "version": 1, "reason": "needed after all"},
        headers=service,
    )
    assert restored.status_code == 200, restored.text

    async with app_state(app).sessionmaker() as session:
        stored = (await session.scalars(select(ProviderConfig))).all()
    for row in stored:
        for value in (row.api_key_encrypted, row.api_secret_encrypted):
            assert value is None or not any(p in value for p in PLAINTEXTS)


async def test_a_second_import_imports_nothing_twice(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory, source_url: str
) -> None:
    state = app_state(app)
    await import_configs.import_provider_configs(state, source_url)
    again = await import_configs.import_provider_configs(state, source_url)
    assert (again.configs, again.versions, again.already_imported) == (0, 0, 4)
    service = bearer(make_token(["tenant-a"], roles=["service"]))
    history = await client.get(
        "/config/tenant-a/history", params={"config_id": MAP_ID.hex}, headers=service
    )
    assert len(history.json()["items"]) == 2


async def test_an_import_of_one_tenant_leaves_the_others_out(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory, source_url: str
) -> None:
    report = await import_configs.import_provider_configs(
        app_state(app), source_url, tenant_id="tenant-b"
    )
    assert (report.configs, report.tenants) == (1, {"tenant-b"})
    service = bearer(make_token(["tenant-a"], roles=["service"]))
    assert (await client.get("/config/tenant-a", headers=service)).json()["source"] == "default"


def test_the_import_command_reports_refused_rows_and_never_prints_a_key(
    database_url: str,
    source_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["import", "provider-configs", "--from", source_url]) == 1
    captured = capsys.readouterr()
    assert "imported 4 configurations with 7 versions for 2 tenants" in captured.out
    assert f"refused provider_configs {FAX_ID}" in captured.out
    for plaintext in PLAINTEXTS:
        assert plaintext not in captured.out + captured.err


def test_an_unreadable_source_exits_2(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    missing = PG_ADMIN_URL.rsplit("/", 1)[0] + "/junction_no_such_database"
    assert main(["import", "provider-configs", "--from", missing]) == 2
    assert "could not be read" in capsys.readouterr().err


def test_an_import_whose_junction_database_cannot_be_reached_exits_3(
    source_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"postgresql+asyncpg://postgres:pw-not-printed@127.0.0.1:{free_port()}/junction"
    monkeypatch.setenv("DATABASE_URL", closed)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["import", "provider-configs", "--from", source_url]) == 3
    err = capsys.readouterr().err
    assert err.startswith("junction import: database failed: ") and "Traceback" not in err
    assert "pw-not-printed" not in err

"""`junction import provider-configs`: the older provider-configuration service's two PostgreSQL
tables (`provider_configs`, `config_versions`) into Junction, with their whole history.

Each configuration keeps its id (the uuid's hex), so a second run finds what the first imported
and skips it: nothing is imported twice. Its versions keep their numbers, change types,
authors, times and reasons; each snapshot is built by the domain's own `snapshot_of`, its keys
sealed by the domain's secret fields (bound to the configuration's row, as a write would bind
them). Timestamps without a zone are taken as UTC. A row that does not fit (unknown type, bad
priority, ...) is reported with its id and why, and not imported; keys are never printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.core.config import Settings, normalize_database_url
from app.core.crypto import Keyring
from app.core.deps import TENANT_ID_PATTERN
from app.operations.engine import run_to_end
from app.operations.progress import Progress
from app.provider_configs import service as provider_configs_service
from app.provider_configs.models import ProviderConfig, ProviderConfigVersion
from app.provider_configs.rendering import API_KEY, API_SECRET
from app.provider_configs.schemas import MAX_CONFIG_DATA_BYTES, PRIORITY_RANK, PROVIDER_TYPES
from app.state import AppState
from app.workspaces import service as workspace_service

CHANGE_TYPES = ("created", "updated", "deleted", "enabled", "disabled")
IMPORTED_BY = "import"  # the author of a change the older service recorded without one

_CONFIGS = (
    "SELECT id, tenant_id, provider_type, provider_name, api_key, api_secret, priority, enabled,"
    " config_data, created_at, updated_at, created_by, updated_by, version FROM provider_configs"
)
_VERSIONS = (
    "SELECT id, config_id, tenant_id, provider_type, provider_name, api_key, api_secret, priority,"
    " enabled, config_data, version, change_type, changed_at, changed_by, change_reason"
    " FROM config_versions"
)


class ImportSourceError(Exception):
    """The source database could not be read (unreachable, or not the older service's)."""


@dataclass(frozen=True)
class Refused:
    table: str
    row_id: str
    tenant_id: str
    reason: str


@dataclass
class ImportReport:
    configs: int = 0
    versions: int = 0
    already_imported: int = 0
    tenants: set[str] = field(default_factory=set)
    refused: list[Refused] = field(default_factory=list)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _config_data(value: Any) -> Any:
    if value is None:
        return {}
    return json.loads(value) if isinstance(value, str) else value


def _misfit(row: Mapping[str, Any], *, is_version: bool) -> str | None:
    """Why a source row cannot be a Junction configuration (or version); None when it fits."""
    if not isinstance(row["tenant_id"], str) or not re.fullmatch(
        TENANT_ID_PATTERN, row["tenant_id"]
    ):
        return "tenant_id is not a Junction tenant id (1-128 letters, digits and . _ : -)"
    if row["provider_type"] not in PROVIDER_TYPES:
        return f"unknown provider_type '{str(row['provider_type'])[:50]}'"
    if row["priority"] not in PRIORITY_RANK:
        return f"bad priority '{str(row['priority'])[:20]}' (primary, secondary or fallback)"
    name = row["provider_name"]
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        return "provider_name must be 1-100 characters"
    if row["enabled"] is None:
        return "enabled is null"
    try:
        data = _config_data(row["config_data"])
    except ValueError:
        return "config_data is not JSON"
    if not isinstance(data, dict):
        return "config_data is not an object"
    if len(json.dumps(data)) > MAX_CONFIG_DATA_BYTES:
        return f"config_data is over {MAX_CONFIG_DATA_BYTES} bytes"
    if not isinstance(row["version"], int) or row["version"] < 1:
        return "version must be a positive integer"
    if is_version and row["change_type"] not in CHANGE_TYPES:
        return f"unknown change_type '{str(row['change_type'])[:20]}'"
    return None


async def _read_source(url: str, tenant_id: str | None) -> tuple[list[Any], list[Any]]:
    engine = create_async_engine(normalize_database_url(url), poolclass=NullPool)
    where = " WHERE tenant_id = :tenant" if tenant_id else ""
    params = {"tenant": tenant_id} if tenant_id else {}
    try:
        async with engine.connect() as conn:
            configs = (await conn.execute(text(_CONFIGS + where), params)).mappings().all()
            versions = (
                (
                    await conn.execute(
                        text(_VERSIONS + where + " ORDER BY config_id, version"), params
                    )
                )
                .mappings()
                .all()
            )
    except (DBAPIError, SQLAlchemyError, OSError) as exc:
        # The driver's message may quote the URL: give only its kind.
        raise ImportSourceError(f"the source could not be read ({type(exc).__name__})") from None
    finally:
        await engine.dispose()
    return list(configs), list(versions)


def _sealed(keyring: Keyring, config_id: str, row: Mapping[str, Any]) -> ProviderConfig:
    """A configuration in the state a source row describes, its keys sealed for its row."""
    config = ProviderConfig(
        id=config_id,
        tenant_id=row["tenant_id"],
        provider_type=row["provider_type"],
        provider_name=row["provider_name"],
        priority=row["priority"],
        enabled=bool(row["enabled"]),
        config_data=_config_data(row["config_data"]),
        deleted=row.get("change_type") == "deleted",
    )
    API_KEY.seal_masked(keyring, config, row["api_key"])
    API_SECRET.seal_masked(keyring, config, row["api_secret"])
    return config


async def _import_one(
    session: AsyncSession,
    keyring: Keyring,
    config_id: str,
    current: Mapping[str, Any] | None,
    versions: Sequence[Mapping[str, Any]],
) -> bool:
    """One configuration and its history; False when it was imported before."""
    if await session.get(ProviderConfig, config_id) is not None:
        return False
    latest = versions[-1] if versions else None
    source = current if current is not None else latest
    assert source is not None
    await workspace_service.ensure_workspace(session, source["tenant_id"])
    config = _sealed(keyring, config_id, source)
    config.deleted = latest is not None and latest["change_type"] == "deleted"
    config.version = max([source["version"], *(v["version"] for v in versions)])
    first_at = _utc(versions[0]["changed_at"]) if versions else None
    last_at = _utc(latest["changed_at"]) if latest else None
    created = _utc(current["created_at"]) if current else first_at
    updated = _utc(current["updated_at"]) if current else last_at
    config.created_at = created or _now()
    config.updated_at = updated or config.created_at
    author = current["updated_by"] if current else latest["changed_by"] if latest else None
    config.updated_by = str(author)[:255] if author else None
    session.add(config)
    for version in versions:
        snapshot = provider_configs_service.snapshot_of(_sealed(keyring, config_id, version))
        session.add(
            ProviderConfigVersion(
                config_id=config_id,
                tenant_id=version["tenant_id"],
                provider_type=version["provider_type"],
                provider_name=version["provider_name"],
                version=version["version"],
                change_type=version["change_type"],
                snapshot=snapshot,
                changed_at=_utc(version["changed_at"]) or config.updated_at,
                changed_by=(version["changed_by"] or IMPORTED_BY)[:255],
                change_reason=version["change_reason"],
            )
        )
    await session.flush()
    return True


def _now() -> datetime:
    return datetime.now(UTC)


async def _name_taken(session: AsyncSession, config_id: str, row: Mapping[str, Any]) -> bool:
    """Whether Junction already has another configuration of this tenant, type and name."""
    existing = await session.scalar(
        select(ProviderConfig.id).where(
            ProviderConfig.tenant_id == row["tenant_id"],
            ProviderConfig.provider_type == row["provider_type"],
            ProviderConfig.provider_name == row["provider_name"],
        )
    )
    return existing is not None and existing != config_id


async def import_provider_configs(
    state: AppState, url: str, *, tenant_id: str | None = None, stream: Any = None
) -> ImportReport:
    """Import every configuration (of `tenant_id`, when given), one transaction each; then no
    replica serves an imported tenant's old document."""
    configs, versions = await _read_source(url, tenant_id)
    report = ImportReport()
    by_config: dict[str, list[Any]] = defaultdict(list)
    for version in versions:
        problem = _misfit(version, is_version=True)
        if problem:
            report.refused.append(
                Refused("config_versions", str(version["id"]), str(version["tenant_id"]), problem)
            )
        else:
            by_config[str(version["config_id"])].append(version)
    current_rows: dict[str, Any] = {}
    for row in configs:
        problem = _misfit(row, is_version=False)
        if problem:
            report.refused.append(
                Refused("provider_configs", str(row["id"]), str(row["tenant_id"]), problem)
            )
            # Its history goes with it: a history without its configuration is not imported.
            by_config.pop(str(row["id"]), None)
        else:
            current_rows[str(row["id"])] = row
    ids = sorted(set(current_rows) | set(by_config))
    with Progress("import provider-configs", total=len(ids), stream=stream) as progress:
        for old_id in ids:
            await _import_config(state, report, old_id, current_rows.get(old_id), by_config[old_id])
            progress.advance(1)
    for tenant in sorted(report.tenants):
        await provider_configs_service.forget_tenant(state.provider_configs, tenant)
    return report


async def _import_config(
    state: AppState,
    report: ImportReport,
    old_id: str,
    current: Mapping[str, Any] | None,
    versions: Sequence[Mapping[str, Any]],
) -> None:
    source = current if current is not None else versions[-1]
    config_id = uuid.UUID(old_id).hex
    # A snapshot's keys are bound to its configuration's tenant: a version of another tenant
    # could never be restored.
    own = [v for v in versions if v["tenant_id"] == source["tenant_id"]]
    for version in versions:
        if version["tenant_id"] != source["tenant_id"]:
            reason = "its tenant_id differs from its configuration's"
            report.refused.append(
                Refused("config_versions", str(version["id"]), str(version["tenant_id"]), reason)
            )
    versions = own
    async with state.sessionmaker() as session, session.begin():
        if await _name_taken(session, config_id, source):
            report.refused.append(
                Refused(
                    "provider_configs",
                    old_id,
                    str(source["tenant_id"]),
                    "Junction already has a configuration of this tenant, type and name",
                )
            )
            return
        imported = await _import_one(session, state.keyring, config_id, current, versions)
    if imported:
        report.configs += 1
        report.versions += len(versions)
        report.tenants.add(str(source["tenant_id"]))
    else:
        report.already_imported += 1


def print_report(report: ImportReport, out: Any) -> int:
    """The summary and every refused row (ids and reasons only); exit 1 when some were refused."""
    print(
        f"imported {report.configs} configurations with {report.versions} versions for "
        f"{len(report.tenants)} tenants; {report.already_imported} imported before (skipped)",
        file=out,
    )
    for refused in report.refused:
        print(
            f"refused {refused.table} {refused.row_id} (tenant {refused.tenant_id[:128]}): "
            f"{refused.reason}",
            file=out,
        )
    return 1 if report.refused else 0


def command(args: argparse.Namespace) -> int:
    """`junction import provider-configs --from URL [--tenant T]`: 0 all imported, 1 some rows
    refused, 2 the source could not be read."""
    from app.operations.engine import command_app

    settings = Settings()

    async def run() -> int:
        async with command_app(settings) as state:
            report = await import_provider_configs(state, args.source, tenant_id=args.tenant)
        return print_report(report, sys.stdout)

    try:
        return run_to_end(run())
    except ImportSourceError as exc:
        print(f"junction import: {exc}", file=sys.stderr)
        return 2

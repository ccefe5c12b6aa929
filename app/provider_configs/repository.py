"""Queries of the provider_configs domain: row locks for writers, plain selects for readers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, Select, Text, TextualSelect, and_, column, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import dialect_insert, new_id, utcnow
from app.provider_configs.models import ProviderConfig, ProviderConfigVersion

# What a document needs of a row; the ciphertexts only when secrets are revealed.
_DOCUMENT_COLUMNS = (
    ProviderConfig.id,
    ProviderConfig.provider_type,
    ProviderConfig.provider_name,
    ProviderConfig.priority,
    ProviderConfig.enabled,
    # As stored (JSON text): the serializer splices it in rather than decoding and re-encoding.
    column("config_data", Text),
    ProviderConfig.api_key_mask,
    ProviderConfig.api_secret_mask,
    ProviderConfig.version,
    ProviderConfig.updated_at,
    ProviderConfig.updated_by,
)
_SECRET_COLUMNS = (ProviderConfig.api_key_encrypted, ProviderConfig.api_secret_encrypted)


def _live_configs(*, by_type: bool, with_secrets: bool) -> TextualSelect:
    # Textual SQL, built once: the uncached read is the service's second-hottest path, and
    # building and cache-keying an equivalent select() each time costs as much as the query.
    columns = _DOCUMENT_COLUMNS + _SECRET_COLUMNS if with_secrets else _DOCUMENT_COLUMNS
    # Column names come from the model; only the values are parameters.
    names = ", ".join(
        "CAST(config_data AS TEXT) AS config_data" if c.key == "config_data" else c.key
        for c in columns
    )
    sql = (
        f"SELECT {names} FROM {ProviderConfig.__tablename__}"  # noqa: S608
        " WHERE tenant_id = :tenant_id AND deleted = :deleted"
        + (" AND provider_type = :provider_type" if by_type else "")
    )
    return text(sql).columns(*columns)


_LIVE_CONFIGS = {
    (by_type, with_secrets): _live_configs(by_type=by_type, with_secrets=with_secrets)
    for by_type in (False, True)
    for with_secrets in (False, True)
}


async def fetch_live_configs(
    session: AsyncSession | AsyncConnection,
    tenant_id: str,
    provider_type: str | None,
    *,
    with_secrets: bool = False,
) -> Sequence[Row[Any]]:
    statement = _LIVE_CONFIGS[(provider_type is not None, with_secrets)]
    params: dict[str, Any] = {"tenant_id": tenant_id, "deleted": False}
    if provider_type is not None:
        params["provider_type"] = provider_type
    rows: Sequence[Row[Any]] = (await session.execute(statement, params)).all()
    return rows


def _locked(statement: Select[Any]) -> Select[Any]:
    # populate_existing: a row already in the session is refreshed from the locked read.
    return statement.with_for_update().execution_options(populate_existing=True)


async def lock_config(
    session: AsyncSession, tenant_id: str, provider_type: str, provider_name: str
) -> ProviderConfig | None:
    statement = select(ProviderConfig).where(
        ProviderConfig.tenant_id == tenant_id,
        ProviderConfig.provider_type == provider_type,
        ProviderConfig.provider_name == provider_name,
    )
    config: ProviderConfig | None = (await session.execute(_locked(statement))).scalar_one_or_none()
    return config


async def lock_config_by_id(
    session: AsyncSession, tenant_id: str, config_id: str
) -> ProviderConfig | None:
    statement = select(ProviderConfig).where(
        ProviderConfig.id == config_id, ProviderConfig.tenant_id == tenant_id
    )
    config: ProviderConfig | None = (await session.execute(_locked(statement))).scalar_one_or_none()
    return config


async def lock_live_configs(
    session: AsyncSession, tenant_id: str, provider_type: str | None, provider_name: str | None
) -> Sequence[ProviderConfig]:
    statement = select(ProviderConfig).where(
        ProviderConfig.tenant_id == tenant_id, ProviderConfig.deleted.is_(False)
    )
    if provider_type is not None:
        statement = statement.where(ProviderConfig.provider_type == provider_type)
    if provider_name is not None:
        statement = statement.where(ProviderConfig.provider_name == provider_name)
    # One lock order for every writer, so two deletes cannot deadlock.
    statement = statement.order_by(ProviderConfig.provider_type, ProviderConfig.provider_name)
    configs: Sequence[ProviderConfig] = (await session.execute(_locked(statement))).scalars().all()
    return configs


async def insert_absent_config(
    session: AsyncSession, tenant_id: str, provider_type: str, provider_name: str
) -> None:
    """Make sure a row exists to lock: an empty, deleted, version-0 row unless one is there.

    Concurrent creators of one name meet at the unique constraint: one inserts, the others wait
    for it and insert nothing, then all lock the same row in turn.
    """
    now = utcnow()
    statement = (
        dialect_insert(session, ProviderConfig)
        .values(
            id=new_id(),
            tenant_id=tenant_id,
            provider_type=provider_type,
            provider_name=provider_name,
            priority="primary",
            enabled=True,
            config_data={},
            version=0,
            deleted=True,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "provider_type", "provider_name"])
    )
    await session.execute(statement)


async def get_version(
    session: AsyncSession, config_id: str, version: int
) -> ProviderConfigVersion | None:
    statement = select(ProviderConfigVersion).where(
        ProviderConfigVersion.config_id == config_id, ProviderConfigVersion.version == version
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def config_exists(session: AsyncSession, tenant_id: str, config_id: str) -> bool:
    statement = select(ProviderConfig.id).where(
        ProviderConfig.id == config_id, ProviderConfig.tenant_id == tenant_id
    )
    return (await session.execute(statement)).first() is not None


async def history_page(
    session: AsyncSession,
    tenant_id: str,
    *,
    provider_type: str | None,
    provider_name: str | None,
    config_id: str | None,
    before_id: int | None,
    limit: int,
) -> Sequence[ProviderConfigVersion]:
    statement = select(ProviderConfigVersion).where(ProviderConfigVersion.tenant_id == tenant_id)
    if provider_type is not None:
        statement = statement.where(ProviderConfigVersion.provider_type == provider_type)
    if provider_name is not None:
        statement = statement.where(ProviderConfigVersion.provider_name == provider_name)
    if config_id is not None:
        statement = statement.where(ProviderConfigVersion.config_id == config_id)
    if before_id is not None:
        statement = statement.where(ProviderConfigVersion.id < before_id)
    statement = statement.order_by(ProviderConfigVersion.id.desc()).limit(limit)
    return (await session.execute(statement)).scalars().all()


async def version_snapshots(
    session: AsyncSession, wanted: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, Any]]:
    """The snapshots of the (config id, version) pairs asked for that exist, in one select."""
    pairs = sorted({(config_id, version) for config_id, version in wanted if version >= 1})
    if not pairs:
        return {}
    statement = select(
        ProviderConfigVersion.config_id,
        ProviderConfigVersion.version,
        ProviderConfigVersion.snapshot,
    ).where(
        or_(
            *(
                and_(
                    ProviderConfigVersion.config_id == config_id,
                    ProviderConfigVersion.version == version,
                )
                for config_id, version in pairs
            )
        )
    )
    rows = (await session.execute(statement)).all()
    return {(row.config_id, row.version): row.snapshot for row in rows}


async def find_config(
    session: AsyncSession, tenant_id: str, config_id: str
) -> ProviderConfig | None:
    """The tenant's configuration row (deleted or not), read without a lock."""
    statement = select(ProviderConfig).where(
        ProviderConfig.id == config_id, ProviderConfig.tenant_id == tenant_id
    )
    config: ProviderConfig | None = (await session.execute(statement)).scalar_one_or_none()
    return config


async def lock_tenant_configs(session: AsyncSession, tenant_id: str) -> None:
    """PostgreSQL: the tenant's configuration writers' turn, held until the transaction ends."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"provider_configs:{tenant_id}"},
    )


async def live_versions(
    session: AsyncSession, tenant_id: str, provider_type: str | None
) -> list[tuple[str, int]]:
    """(id, version) of each live configuration of the tenant (of one type): what a document's
    entity tag is derived from."""
    statement = select(ProviderConfig.id, ProviderConfig.version).where(
        ProviderConfig.tenant_id == tenant_id, ProviderConfig.deleted.is_(False)
    )
    if provider_type is not None:
        statement = statement.where(ProviderConfig.provider_type == provider_type)
    return [(row.id, row.version) for row in (await session.execute(statement)).all()]

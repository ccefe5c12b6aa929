"""Provider configurations: upserts, deletes and rollbacks, each change one version row."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.crypto import DecryptionError, Keyring, mask
from app.core.db import after_commit, is_postgres, utcnow
from app.core.errors import InvalidField
from app.core.pagination import RowIdCursor
from app.core.secret_fields import MaskedSecretField
from app.provider_configs import repository
from app.provider_configs.cache import ConfigCache
from app.provider_configs.exceptions import (
    ConfigNotFound,
    NotRestorable,
    SecretUndecryptable,
    VersionConflict,
    VersionNotFound,
)
from app.provider_configs.models import ProviderConfig, ProviderConfigVersion
from app.provider_configs.schemas import (
    MAX_CONFIG_DATA_BYTES,
    PRIORITY_RANK,
    PROVIDER_TYPES,
    ConfigWrite,
    DefaultsDocument,
    ProviderIn,
    RollbackRequest,
    list_field,
)
from app.workspaces import service as workspace_service

_MAX_CHANGED_BY = 255

# The secret columns; a version snapshot keys their values by the same column names.
API_KEY = MaskedSecretField(
    ProviderConfig.__tablename__, "api_key", "api_key_encrypted", "api_key_mask"
)
API_SECRET = MaskedSecretField(
    ProviderConfig.__tablename__, "api_secret", "api_secret_encrypted", "api_secret_mask"
)
SECRET_FIELDS = (API_KEY, API_SECRET)

# A stored row's secrets in clear, in SECRET_FIELDS order.
Reveal = Callable[[Row[Any]], tuple[str | None, str | None]]


# --- the one renderer ----------------------------------------------------------------------------
# Every answer of the domain is built here from string pieces, with the stored JSON spliced in:
# this runs on every cache miss and every uncached read, where building dicts and encoding them
# was a fifth of the cost. The pydantic models in schemas.py document these shapes, and a test
# validates every answer against them.

_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _nullable(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _nullable_int(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def _provider_json(
    head: str,
    provider_name: str,
    priority: str,
    enabled: bool,
    config_data: Any,
    api_key: str | None,
    api_secret: str | None,
) -> str:
    """The fields a document entry and a version snapshot share, after the entry's own `head`;
    `config_data` as stored (JSON text) or decoded."""
    if not isinstance(config_data, str):
        config_data = _compact(config_data)
    return (
        f'{{{head}"provider_name":{_quote(provider_name)},"priority":{_quote(priority)},'
        f'"enabled":{"true" if enabled else "false"},"config_data":{config_data},'
        f'"api_key":{_nullable(api_key)},"api_secret":{_nullable(api_secret)}'
    )


def _entry_json(
    row: tuple[Any, ...],
    secrets: tuple[str | None, str | None] | None = None,
    source: str = "tenant",
) -> str:
    """One provider of a document: a stored row (masked, or with `secrets` in clear) or a default.

    Positional: the columns of repository.fetch_live_configs, in order (faster than by name).
    """
    (
        config_id,
        _provider_type,
        provider_name,
        priority,
        enabled,
        config_data,
        api_key,
        api_secret,
        version,
        updated_at,
        updated_by,
    ) = row[:11]
    if secrets is not None:
        api_key, api_secret = secrets
    head = f'"id":{_nullable(config_id)},'
    return (
        _provider_json(head, provider_name, priority, enabled, config_data, api_key, api_secret)
        + f',"version":{int(version)},"updated_at":{_nullable(_iso(updated_at))},'
        f'"updated_by":{_nullable(updated_by)},"source":"{source}"}}'
    )


def _sorted_by_type(rows: Sequence[Row[Any]], types: Sequence[str]) -> dict[str, list[Row[Any]]]:
    stored: dict[str, list[Row[Any]]] = {t: [] for t in types}
    for row in rows:
        stored[row.provider_type].append(row)
    for own in stored.values():
        own.sort(key=lambda r: (PRIORITY_RANK.get(r.priority, 9), r.provider_name))
    return stored


def render_document(
    tenant_id: str,
    rows: Sequence[Row[Any]],
    defaults: Defaults,
    provider_type: str | None,
    reveal: Reveal | None = None,
) -> bytes:
    """The older service's document, serialized: secrets masked, or in clear through `reveal`.

    A type the tenant stored nothing for shows the defaults.
    """
    types = (provider_type,) if provider_type else PROVIDER_TYPES
    stored = _sorted_by_type(rows, types)
    fallback = defaults.masked_json if reveal is None else defaults.revealed_json
    parts = [
        '{"tenant_id":',
        _quote(tenant_id),
        ',"source":"tenant"' if rows else ',"source":"default"',
    ]
    for t in types:
        own = stored[t]
        parts.append(f',"{list_field(t)}":[')
        if not own:
            parts.append(fallback[t])
        elif reveal is None:
            parts.append(",".join(_entry_json(r) for r in own))
        else:
            parts.append(",".join(_entry_json(r, reveal(r)) for r in own))
        parts.append("]")
    parts.append("}")
    return "".join(parts).encode()


def _history_item_json(row: ProviderConfigVersion) -> str:
    snapshot = row.snapshot
    head = f'"provider_type":{_quote(snapshot["provider_type"])},'
    provider = _provider_json(
        head,
        snapshot["provider_name"],
        snapshot["priority"],
        snapshot["enabled"],
        snapshot["config_data"],
        snapshot.get(API_KEY.mask),
        snapshot.get(API_SECRET.mask),
    )
    return (
        f'{{"config_id":{_quote(row.config_id)},"version":{int(row.version)},'
        f'"change_type":{_quote(row.change_type)},"changed_at":{_nullable(_iso(row.changed_at))},'
        f'"changed_by":{_quote(row.changed_by)},"change_reason":{_nullable(row.change_reason)},'
        f'"source_version":{_nullable_int(row.source_version)},"snapshot":{provider},'
        f'"deleted":{"true" if snapshot.get("deleted") else "false"}}}}}'
    )


def render_history(rows: Sequence[ProviderConfigVersion], next_cursor: str | None) -> bytes:
    items = ",".join(_history_item_json(r) for r in rows)
    return f'{{"items":[{items}],"next_cursor":{_nullable(next_cursor)}}}'.encode()


# --- defaults ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    """The settings' defaults, rendered once per type: masked for every caller, revealed for
    services."""

    masked_json: dict[str, str]
    revealed_json: dict[str, str]

    @classmethod
    def from_settings_document(cls, raw: dict[str, Any]) -> Defaults:
        document = DefaultsDocument.model_validate(raw)
        masked: dict[str, str] = {}
        revealed: dict[str, str] = {}
        for provider_type in PROVIDER_TYPES:
            providers = sorted(
                getattr(document, list_field(provider_type)),
                key=lambda p: (PRIORITY_RANK[p.priority], p.provider_name),
            )
            masked_entries: list[str] = []
            revealed_entries: list[str] = []
            for p in providers:
                # In the layout of a stored row, so the one entry renderer draws them too.
                row = (
                    *(None, provider_type, p.provider_name, p.priority, p.enabled, p.config_data),
                    *(mask(p.api_key), mask(p.api_secret), 0, None, None),
                )
                masked_entries.append(_entry_json(row, source="default"))
                clear = (p.api_key, p.api_secret)
                revealed_entries.append(_entry_json(row, clear, source="default"))
            masked[provider_type] = ",".join(masked_entries)
            revealed[provider_type] = ",".join(revealed_entries)
        return cls(masked, revealed)


# --- reads -------------------------------------------------------------------------------------


def _revealer(keyring: Keyring, tenant_id: str) -> Reveal:
    def open_secret(row: Row[Any], field: MaskedSecretField) -> str | None:
        stored = field.stored(row)
        if not stored:
            return None
        try:
            return field.open(keyring, tenant_id, row.id, stored)
        except DecryptionError:
            # An operator problem (a removed key) or a moved ciphertext: a clear 409, not a 500.
            raise SecretUndecryptable(
                f"{field.name} of {row.provider_type} provider '{row.provider_name}' cannot be "
                "decrypted; store it again",
                provider_type=row.provider_type,
                provider_name=row.provider_name,
            ) from None

    def reveal(row: Row[Any]) -> tuple[str | None, str | None]:
        return open_secret(row, API_KEY), open_secret(row, API_SECRET)

    return reveal


async def read_document(
    session: AsyncSession,
    defaults: Defaults,
    tenant_id: str,
    provider_type: str | None,
    *,
    keyring: Keyring | None = None,
) -> bytes:
    """The serialized document; secrets in clear when a keyring is given, masked otherwise."""
    rows = await repository.fetch_live_configs(
        session, tenant_id, provider_type, with_secrets=keyring is not None
    )
    reveal = None if keyring is None else _revealer(keyring, tenant_id)
    return render_document(tenant_id, rows, defaults, provider_type, reveal)


def document_loader(engine: AsyncEngine, defaults: Defaults) -> Callable[[str, str | None], Any]:
    """What the cache calls on a miss: one select, serialized once.

    A pooled connection in autocommit rather than an ORM session in a transaction: one SELECT is
    atomic and reads one snapshot on its own, and BEGIN and ROLLBACK would be two round trips of
    the three an uncached read costs.
    """
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def load(tenant_id: str, provider_type: str | None) -> bytes:
        async with reader.connect() as connection:
            rows = await repository.fetch_live_configs(connection, tenant_id, provider_type)
        return render_document(tenant_id, rows, defaults, provider_type)

    return load


# --- writes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """What the routes of this domain share: built once by the lifespan, kept on app.state."""

    keyring: Keyring
    defaults: Defaults
    cache: ConfigCache
    sessionmaker: async_sessionmaker[AsyncSession]


def _check_expected(config: ProviderConfig, expected: int | None, label: str) -> None:
    if expected is None:
        return
    live = not config.deleted and config.version > 0
    if (expected == 0 and not live) or (expected > 0 and expected == config.version):
        return
    raise VersionConflict(
        f"{label} is at version {config.version if config.version else 0}"
        + (" (deleted)" if config.deleted and config.version else "")
        + f", not {expected}",
        current_version=config.version,
    )


def snapshot_of(config: ProviderConfig) -> dict[str, Any]:
    # The ciphertexts stay encrypted (bound to the config row), so a rollback restores secrets.
    snapshot: dict[str, Any] = {
        "provider_type": config.provider_type,
        "provider_name": config.provider_name,
        "priority": config.priority,
        "enabled": config.enabled,
        "config_data": config.config_data,
    }
    for field in SECRET_FIELDS:
        snapshot[field.encrypted] = field.stored(config)
        snapshot[field.mask] = field.stored_mask(config)
    snapshot["deleted"] = config.deleted
    return snapshot


def _record_version(
    session: AsyncSession,
    config: ProviderConfig,
    *,
    change_type: str,
    changed_by: str,
    reason: str | None,
    source_version: int | None = None,
) -> None:
    """Bump the row's version (it is locked) and write its version row in the same transaction."""
    # The caller's `sub` is any string its token carried: the columns hold 255 characters and
    # PostgreSQL text no NUL.
    changed_by = changed_by.replace("\x00", "")[:_MAX_CHANGED_BY]
    now = utcnow()
    config.version += 1
    config.updated_at = now
    config.updated_by = changed_by
    session.add(
        ProviderConfigVersion(
            config_id=config.id,
            tenant_id=config.tenant_id,
            provider_type=config.provider_type,
            provider_name=config.provider_name,
            version=config.version,
            change_type=change_type,
            snapshot=snapshot_of(config),
            changed_at=now,
            changed_by=changed_by,
            change_reason=reason,
            source_version=source_version,
        )
    )


def _incoming_secret(
    keyring: Keyring,
    config: ProviderConfig,
    field: MaskedSecretField,
    value: str | None,
    label: str,
) -> tuple[str | None, str | None] | None:
    """The (ciphertext, mask) to store for a secret sent in a write, or None when unchanged."""
    current_encrypted = field.stored(config)
    current_mask = field.stored_mask(config)
    live = not config.deleted
    if value is None:
        return None if live and current_encrypted is None else (None, None)
    if live and current_mask is not None and value == current_mask:
        return None  # the masked value a GET returned, posted back: keep the secret
    if value.startswith("****"):
        raise InvalidField(
            f"{label}.{field.name}",
            "a masked value cannot be stored; send the secret or omit the field",
        )
    aad = field.aad(config.tenant_id, config.id)
    if live and current_encrypted is not None:
        try:
            if keyring.decrypt(current_encrypted, aad) == value:
                return None
        except DecryptionError:
            pass  # unreadable (its key is gone): the new value replaces it
    return keyring.encrypt(value, aad), mask(value)


def _check_config_data(config_data: dict[str, Any], label: str) -> None:
    if len(json.dumps(config_data)) > MAX_CONFIG_DATA_BYTES:
        raise InvalidField(f"{label}.config_data", f"larger than {MAX_CONFIG_DATA_BYTES} bytes")


async def _upsert_one(
    session: AsyncSession,
    keyring: Keyring,
    tenant_id: str,
    provider_type: str,
    provider: ProviderIn,
    *,
    changed_by: str,
    reason: str | None,
) -> bool:
    label = f"{list_field(provider_type)}[{provider.provider_name}]"
    name = provider.provider_name
    config = await repository.lock_config(session, tenant_id, provider_type, name)
    if config is None:
        await workspace_service.ensure_workspace(session, tenant_id)
        await repository.insert_absent_config(session, tenant_id, provider_type, name)
        config = await repository.lock_config(session, tenant_id, provider_type, name)
        assert config is not None
    _check_expected(config, provider.expected_version, label)
    live = not config.deleted
    given = provider.model_fields_set

    priority = provider.priority or (config.priority if live else "primary")
    enabled = (
        provider.enabled if provider.enabled is not None else (config.enabled if live else True)
    )
    config_data = (
        provider.config_data
        if provider.config_data is not None
        else (config.config_data if live else {})
    )
    _check_config_data(config_data, label)
    secrets: dict[MaskedSecretField, tuple[str | None, str | None]] = {}
    for field in SECRET_FIELDS:
        if field.name in given:
            sent = getattr(provider, field.name)
            change = _incoming_secret(keyring, config, field, sent, label)
            if change is not None:
                secrets[field] = change
        elif not live and field.stored(config) is not None:
            secrets[field] = (None, None)  # a re-created config starts without the old secrets

    content_changed = (
        bool(secrets) or priority != config.priority or config_data != config.config_data
    )
    enabled_changed = enabled != config.enabled
    if live and not content_changed and not enabled_changed:
        return False
    if not live:
        change_type = "created"
    elif content_changed:
        change_type = "updated"
    else:
        change_type = "enabled" if enabled else "disabled"

    config.priority = priority
    config.enabled = enabled
    config.config_data = config_data
    config.deleted = False
    for field, (encrypted, masked) in secrets.items():
        field.store(config, encrypted, masked)
    _record_version(session, config, change_type=change_type, changed_by=changed_by, reason=reason)
    return True


async def _start_write(session: AsyncSession, tenant_id: str) -> None:
    """SQLite: write first, so the transaction holds the database's write lock before it reads.

    A SQLite transaction that reads and then writes fails at once if another writer committed in
    between; one that starts with a write waits its turn (busy timeout) and then reads the latest
    state. PostgreSQL needs nothing here: writers lock the rows they change.
    """
    if not is_postgres(session):
        await workspace_service.ensure_workspace(session, tenant_id)


def _invalidate_after_commit(
    session: AsyncSession, domain: Domain, tenant_id: str, provider_types: Iterable[str]
) -> None:
    types = set(provider_types)
    if not types:
        return

    async def invalidate() -> None:
        await domain.cache.invalidate(tenant_id, types)

    after_commit(session, invalidate)


async def upsert_providers(
    session: AsyncSession, domain: Domain, tenant_id: str, body: ConfigWrite, *, changed_by: str
) -> bytes:
    """Upsert the listed providers (others untouched); answers the whole document."""
    if body.tenant_id is not None and body.tenant_id != tenant_id:
        raise InvalidField("tenant_id", "does not match the tenant in the path")
    listed = body.providers()
    if not listed:
        raise InvalidField("body", "list at least one provider (e.g. map_providers)")
    seen: set[tuple[str, str]] = set()
    for provider_type, provider in listed:
        if (provider_type, provider.provider_name) in seen:
            raise InvalidField(
                list_field(provider_type), f"provider '{provider.provider_name}' is listed twice"
            )
        seen.add((provider_type, provider.provider_name))
    await _start_write(session, tenant_id)
    # Rows are locked in one order, so two writers listing the same providers cannot deadlock.
    changed: set[str] = set()
    for provider_type, provider in sorted(listed, key=lambda p: (p[0], p[1].provider_name)):
        if await _upsert_one(
            session,
            domain.keyring,
            tenant_id,
            provider_type,
            provider,
            changed_by=changed_by,
            reason=body.change_reason,
        ):
            changed.add(provider_type)
    await session.flush()
    _invalidate_after_commit(session, domain, tenant_id, changed)
    return await read_document(session, domain.defaults, tenant_id, None)


async def delete_configs(
    session: AsyncSession,
    domain: Domain,
    tenant_id: str,
    *,
    provider_type: str | None,
    provider_name: str | None,
    reason: str,
    changed_by: str,
) -> bytes:
    """Delete the matching live configurations, each with a `deleted` version; history stays."""
    await _start_write(session, tenant_id)
    configs = await repository.lock_live_configs(session, tenant_id, provider_type, provider_name)
    if not configs:
        raise ConfigNotFound("no stored configuration matches")
    for config in configs:
        config.deleted = True
        _record_version(
            session, config, change_type="deleted", changed_by=changed_by, reason=reason
        )
    await session.flush()
    _invalidate_after_commit(session, domain, tenant_id, {c.provider_type for c in configs})
    return await read_document(session, domain.defaults, tenant_id, None)


async def rollback(
    session: AsyncSession,
    domain: Domain,
    tenant_id: str,
    request: RollbackRequest,
    *,
    changed_by: str,
) -> bytes:
    """Write an old version's content as a new version; brings a deleted configuration back."""
    await _start_write(session, tenant_id)
    config = await repository.lock_config_by_id(session, tenant_id, request.config_id)
    if config is None or config.version == 0:
        raise ConfigNotFound(f"configuration '{request.config_id}' not found")
    _check_expected(config, request.expected_version, f"configuration '{config.id}'")
    target = await repository.get_version(session, config.id, request.version)
    if target is None:
        raise VersionNotFound(
            f"configuration '{config.id}' has no version {request.version}",
            current_version=config.version,
        )
    snapshot = target.snapshot
    if snapshot.get("deleted"):
        raise NotRestorable(
            "version", f"version {request.version} records a deletion; choose one with content"
        )
    config.priority = snapshot["priority"]
    config.enabled = snapshot["enabled"]
    config.config_data = snapshot["config_data"]
    for field in SECRET_FIELDS:
        field.store(config, snapshot.get(field.encrypted), snapshot.get(field.mask))
    config.deleted = False
    _record_version(
        session,
        config,
        change_type="rolled_back",
        changed_by=changed_by,
        reason=request.why,
        source_version=request.version,
    )
    await session.flush()
    _invalidate_after_commit(session, domain, tenant_id, {config.provider_type})
    return await read_document(session, domain.defaults, tenant_id, None)


# --- history -----------------------------------------------------------------------------------


async def history(
    session: AsyncSession,
    tenant_id: str,
    *,
    provider_type: str | None,
    provider_name: str | None,
    config_id: str | None,
    limit: int,
    cursor: str | None,
) -> bytes:
    """Version rows newest first, serialized; `next_cursor` continues after the last item."""
    before_id = RowIdCursor.decode(cursor).row_id if cursor else None
    if config_id is not None and not await repository.config_exists(session, tenant_id, config_id):
        raise ConfigNotFound(f"configuration '{config_id}' not found")
    rows = await repository.history_page(
        session,
        tenant_id,
        provider_type=provider_type,
        provider_name=provider_name,
        config_id=config_id,
        before_id=before_id,
        limit=limit + 1,
    )
    page = rows[:limit]
    next_cursor = RowIdCursor(page[-1].id).encode() if len(rows) > limit else None
    return render_history(page, next_cursor)

"""Provider configurations: upserts, deletes and rollbacks, each change one version row."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.crypto import DecryptionError, Keyring, associated_data, mask
from app.core.db import after_commit, is_postgres, utcnow
from app.core.errors import InvalidInput
from app.provider_configs import repository
from app.provider_configs.cache import ConfigCache
from app.provider_configs.exceptions import (
    ConfigNotFound,
    InvalidCursor,
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

TABLE = "provider_configs"
_MAX_CHANGED_BY = 255
SECRET_FIELDS = ("api_key", "api_secret")

Document = dict[str, Any]
Reveal = Callable[[Row[Any], str], str | None]


# --- defaults ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    """The settings' defaults, rendered once: masked for every caller, revealed for services."""

    masked: dict[str, list[Document]]
    revealed: dict[str, list[Document]]
    masked_json: dict[str, str]

    @classmethod
    def from_settings_document(cls, raw: dict[str, Any]) -> Defaults:
        document = DefaultsDocument.model_validate(raw)
        masked: dict[str, list[Document]] = {}
        revealed: dict[str, list[Document]] = {}
        for provider_type in PROVIDER_TYPES:
            providers = sorted(
                getattr(document, list_field(provider_type)),
                key=lambda p: (PRIORITY_RANK[p.priority], p.provider_name),
            )
            masked[provider_type] = [
                _default_entry(p.model_dump(), reveal=False) for p in providers
            ]
            revealed[provider_type] = [
                _default_entry(p.model_dump(), reveal=True) for p in providers
            ]
        masked_json = {t: ",".join(_compact(entry) for entry in masked[t]) for t in masked}
        return cls(masked, revealed, masked_json)


def _default_entry(provider: dict[str, Any], *, reveal: bool) -> Document:
    return {
        "id": None,
        "provider_name": provider["provider_name"],
        "priority": provider["priority"],
        "enabled": provider["enabled"],
        "config_data": provider["config_data"],
        "api_key": provider["api_key"] if reveal else mask(provider["api_key"]),
        "api_secret": provider["api_secret"] if reveal else mask(provider["api_secret"]),
        "version": 0,
        "updated_at": None,
        "updated_by": None,
        "source": "default",
    }


# --- the document ------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _config_data(row: Row[Any]) -> Any:
    raw = row.config_data
    return json.loads(raw) if isinstance(raw, str) else raw


def _entry(row: Row[Any], reveal: Reveal | None) -> Document:
    return {
        "id": row.id,
        "provider_name": row.provider_name,
        "priority": row.priority,
        "enabled": row.enabled,
        "config_data": _config_data(row),
        "api_key": reveal(row, "api_key") if reveal else row.api_key_mask,
        "api_secret": reveal(row, "api_secret") if reveal else row.api_secret_mask,
        "version": row.version,
        "updated_at": _iso(row.updated_at),
        "updated_by": row.updated_by,
        "source": "tenant",
    }


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
) -> Document:
    """The older service's shape; a type the tenant stored nothing for shows the defaults."""
    types = (provider_type,) if provider_type else PROVIDER_TYPES
    stored = _sorted_by_type(rows, types)
    document: Document = {"tenant_id": tenant_id, "source": "tenant" if rows else "default"}
    fallback = defaults.revealed if reveal else defaults.masked
    for t in types:
        own = stored[t]
        document[list_field(t)] = [_entry(r, reveal) for r in own] if own else fallback[t]
    return document


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _nullable(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _entry_json(row: Row[Any]) -> str:
    # Positional: the columns of repository.fetch_live_configs, in order (faster than by name).
    (
        config_id,
        _provider_type,
        provider_name,
        priority,
        enabled,
        config_data,
        api_key_mask,
        api_secret_mask,
        version,
        updated_at,
        updated_by,
    ) = cast(tuple[Any, ...], row)[:11]
    if not isinstance(config_data, str):
        config_data = _compact(config_data)
    return (
        f'{{"id":{_quote(config_id)},"provider_name":{_quote(provider_name)},'
        f'"priority":{_quote(priority)},"enabled":{"true" if enabled else "false"},'
        f'"config_data":{config_data},"api_key":{_nullable(api_key_mask)},'
        f'"api_secret":{_nullable(api_secret_mask)},"version":{int(version)},'
        f'"updated_at":{_nullable(_iso(updated_at))},"updated_by":{_nullable(updated_by)},'
        '"source":"tenant"}'
    )


def render_document_json(
    tenant_id: str, rows: Sequence[Row[Any]], defaults: Defaults, provider_type: str | None
) -> bytes:
    """`render_document` (masked) serialized directly: what every cached read serves.

    Built from string pieces with the stored JSON spliced in, because this runs on every cache
    miss and every uncached read, where decoding and re-encoding was a fifth of the cost.
    """
    types = (provider_type,) if provider_type else PROVIDER_TYPES
    stored = _sorted_by_type(rows, types)
    parts = [
        '{"tenant_id":',
        _quote(tenant_id),
        ',"source":"tenant"' if rows else ',"source":"default"',
    ]
    for t in types:
        own = stored[t]
        parts.append(f',"{list_field(t)}":[')
        parts.append(",".join(_entry_json(r) for r in own) if own else defaults.masked_json[t])
        parts.append("]")
    parts.append("}")
    return "".join(parts).encode()


def encode(document: Document) -> bytes:
    return _compact(document).encode()


def _aad(tenant_id: str, config_id: str, field: str) -> bytes:
    return associated_data(TABLE, field, tenant_id, config_id)


def _revealer(keyring: Keyring, tenant_id: str) -> Reveal:
    def reveal(row: Row[Any], field: str) -> str | None:
        stored = getattr(row, f"{field}_encrypted")
        if not stored:
            return None
        try:
            return keyring.decrypt(stored, _aad(tenant_id, row.id, field))
        except DecryptionError:
            # An operator problem (a removed key) or a moved ciphertext: a clear 409, not a 500.
            raise SecretUndecryptable(
                f"{field} of {row.provider_type} provider '{row.provider_name}' cannot be "
                "decrypted; store it again",
                provider_type=row.provider_type,
                provider_name=row.provider_name,
            ) from None

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
    if keyring is None:
        return render_document_json(tenant_id, rows, defaults, provider_type)
    reveal = _revealer(keyring, tenant_id)
    return encode(render_document(tenant_id, rows, defaults, provider_type, reveal))


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
        return render_document_json(tenant_id, rows, defaults, provider_type)

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
    return {
        "provider_type": config.provider_type,
        "provider_name": config.provider_name,
        "priority": config.priority,
        "enabled": config.enabled,
        "config_data": config.config_data,
        "api_key_encrypted": config.api_key_encrypted,
        "api_key_mask": config.api_key_mask,
        "api_secret_encrypted": config.api_secret_encrypted,
        "api_secret_mask": config.api_secret_mask,
        "deleted": config.deleted,
    }


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
    keyring: Keyring, config: ProviderConfig, field: str, value: str | None, label: str
) -> tuple[str | None, str | None] | None:
    """The (ciphertext, mask) to store for a secret sent in a write, or None when unchanged."""
    current_encrypted: str | None = getattr(config, f"{field}_encrypted")
    current_mask: str | None = getattr(config, f"{field}_mask")
    live = not config.deleted
    if value is None:
        return None if live and current_encrypted is None else (None, None)
    if live and current_mask is not None and value == current_mask:
        return None  # the masked value a GET returned, posted back: keep the secret
    if value.startswith("****"):
        raise InvalidInput(
            f"{label}.{field}: a masked value cannot be stored; send the secret or omit the field"
        )
    aad = _aad(config.tenant_id, config.id, field)
    if live and current_encrypted is not None:
        try:
            if keyring.decrypt(current_encrypted, aad) == value:
                return None
        except DecryptionError:
            pass  # unreadable (its key is gone): the new value replaces it
    return keyring.encrypt(value, aad), mask(value)


def _check_config_data(config_data: dict[str, Any], label: str) -> None:
    if len(json.dumps(config_data)) > MAX_CONFIG_DATA_BYTES:
        raise InvalidInput(f"{label}.config_data: larger than {MAX_CONFIG_DATA_BYTES} bytes")


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
    secrets: dict[str, tuple[str | None, str | None]] = {}
    for field in SECRET_FIELDS:
        if field in given:
            change = _incoming_secret(keyring, config, field, getattr(provider, field), label)
            if change is not None:
                secrets[field] = change
        elif not live and getattr(config, f"{field}_encrypted") is not None:
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
        setattr(config, f"{field}_encrypted", encrypted)
        setattr(config, f"{field}_mask", masked)
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
        raise InvalidInput("tenant_id: does not match the tenant in the path")
    listed = body.providers()
    if not listed:
        raise InvalidInput("body: list at least one provider (e.g. map_providers)")
    seen: set[tuple[str, str]] = set()
    for provider_type, provider in listed:
        if (provider_type, provider.provider_name) in seen:
            raise InvalidInput(
                f"{list_field(provider_type)}: provider '{provider.provider_name}' is listed twice"
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
            f"version: version {request.version} records a deletion; choose one with content"
        )
    config.priority = snapshot["priority"]
    config.enabled = snapshot["enabled"]
    config.config_data = snapshot["config_data"]
    for field in SECRET_FIELDS:
        setattr(config, f"{field}_encrypted", snapshot.get(f"{field}_encrypted"))
        setattr(config, f"{field}_mask", snapshot.get(f"{field}_mask"))
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


def _encode_cursor(version_row_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{version_row_id}".encode()).decode().rstrip("=")


# Version row ids are 64-bit; a cursor outside that range was not made here.
_MAX_VERSION_ROW_ID = 2**63 - 1


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "v1":
            raise ValueError(prefix)
        version_row_id = int(value)
        if not 0 < version_row_id <= _MAX_VERSION_ROW_ID:
            raise ValueError(value)
        return version_row_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor: not a cursor this service returned") from exc


def _history_item(row: ProviderConfigVersion) -> Document:
    snapshot = row.snapshot
    return {
        "config_id": row.config_id,
        "version": row.version,
        "change_type": row.change_type,
        "changed_at": _iso(row.changed_at),
        "changed_by": row.changed_by,
        "change_reason": row.change_reason,
        "source_version": row.source_version,
        "snapshot": {
            "provider_type": snapshot["provider_type"],
            "provider_name": snapshot["provider_name"],
            "priority": snapshot["priority"],
            "enabled": snapshot["enabled"],
            "config_data": snapshot["config_data"],
            "api_key": snapshot.get("api_key_mask"),
            "api_secret": snapshot.get("api_secret_mask"),
            "deleted": bool(snapshot.get("deleted")),
        },
    }


async def history(
    session: AsyncSession,
    tenant_id: str,
    *,
    provider_type: str | None,
    provider_name: str | None,
    config_id: str | None,
    limit: int,
    cursor: str | None,
) -> Document:
    """Version rows newest first; `next_cursor` continues after the last item."""
    before_id = _decode_cursor(cursor) if cursor else None
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
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return {"items": [_history_item(r) for r in page], "next_cursor": next_cursor}

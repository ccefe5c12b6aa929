"""Provider configurations: upserts, deletes and rollbacks, each change one version row."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.conditional import if_match_tags
from app.core.crypto import DecryptionError, Keyring, mask
from app.core.db import after_commit, is_postgres, utcnow
from app.core.errors import InvalidField, PreconditionFailed
from app.core.secret_fields import MaskedSecretField
from app.provider_configs import repository
from app.provider_configs.cache import ConfigCache
from app.provider_configs.diff import diff_snapshots
from app.provider_configs.exceptions import (
    ConfigNotFound,
    NotRestorable,
    VersionConflict,
    VersionNotFound,
)
from app.provider_configs.models import ProviderConfig, ProviderConfigVersion
from app.provider_configs.reads import read_document
from app.provider_configs.rendering import (
    ALL_SCOPE,
    SECRET_FIELDS,
    Defaults,
    RenderedDocument,
    document_etag,
    etag_scope,
    render_rollback_preview,
)
from app.provider_configs.schemas import (
    MAX_CONFIG_DATA_BYTES,
    PROVIDER_TYPES,
    ConfigWrite,
    ProviderIn,
    RollbackRequest,
    list_field,
)
from app.provider_configs.stream import ChangeFeed
from app.workspaces import service as workspace_service

_MAX_CHANGED_BY = 255

# --- writes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """What the routes of this domain share: built once by the lifespan, kept on app.state."""

    keyring: Keyring
    defaults: Defaults
    cache: ConfigCache
    sessionmaker: async_sessionmaker[AsyncSession]
    changes: ChangeFeed


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


async def _start_write(
    session: AsyncSession, domain: Domain, tenant_id: str, if_match: str | None
) -> None:
    """Take the tenant's write turn, then check the write's `If-Match` against the documents as
    they are now.

    SQLite: write first, so the transaction holds the database's write lock before it reads. A
    SQLite transaction that reads and then writes fails at once if another writer committed in
    between; one that starts with a write waits its turn (busy timeout) and then reads the latest
    state. PostgreSQL: the tenant's configuration writers take one transaction-scoped advisory
    lock, so a document's tag checked here cannot change before this write commits (another
    writer creating a new provider locks no row this one would see); the row locks still order
    the writers of one row.
    """
    if is_postgres(session):
        await repository.lock_tenant_configs(session, tenant_id)
    else:
        await workspace_service.ensure_workspace(session, tenant_id)
    if if_match is not None:
        await _check_if_match(session, domain.defaults, tenant_id, if_match)


async def _check_if_match(
    session: AsyncSession, defaults: Defaults, tenant_id: str, if_match: str
) -> None:
    """412 unless one of the tags names the current document of its scope (`*`: any)."""
    tags = if_match_tags(if_match)
    if tags is None:
        return
    current: dict[str | None, str] = {}
    for tag in tags:
        scope = etag_scope(tag)
        if scope is None:
            continue
        provider_type = None if scope == ALL_SCOPE else scope
        if provider_type not in current:
            versions = await repository.live_versions(session, tenant_id, provider_type)
            current[provider_type] = document_etag(tenant_id, provider_type, versions, defaults)
        if current[provider_type] == tag:
            return
    whole = current.get(None) or document_etag(
        tenant_id, None, await repository.live_versions(session, tenant_id, None), defaults
    )
    raise PreconditionFailed(
        "the configuration changed since that ETag (If-Match); read it again",
        current_etag=whole,
    )


def _invalidate_after_commit(
    session: AsyncSession, domain: Domain, tenant_id: str, provider_types: Iterable[str]
) -> None:
    types = set(provider_types)
    if not types:
        return

    async def invalidate() -> None:
        await domain.cache.invalidate(tenant_id, types)

    after_commit(session, invalidate)


async def forget_tenant(domain: Domain, tenant_id: str) -> None:
    """No replica serves the tenant's documents once this returns: for a commit that removed or
    replaced its rows outside this domain's writes (offboarding, reset, import)."""
    await domain.cache.invalidate(tenant_id, PROVIDER_TYPES)


def forget_tenant_after_commit(session: AsyncSession, domain: Domain, tenant_id: str) -> None:
    """`forget_tenant` once `session` commits."""
    _invalidate_after_commit(session, domain, tenant_id, PROVIDER_TYPES)


async def upsert_providers(
    session: AsyncSession,
    domain: Domain,
    tenant_id: str,
    body: ConfigWrite,
    *,
    changed_by: str,
    if_match: str | None = None,
) -> RenderedDocument:
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
    await _start_write(session, domain, tenant_id, if_match)
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
    if_match: str | None = None,
) -> RenderedDocument:
    """Delete the matching live configurations, each with a `deleted` version; history stays."""
    await _start_write(session, domain, tenant_id, if_match)
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


async def _rollback_source(
    session: AsyncSession, config: ProviderConfig | None, request: RollbackRequest
) -> tuple[ProviderConfig, dict[str, Any]]:
    """The configuration and the snapshot a rollback would restore, once checked."""
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
    return config, snapshot


def _restore(config: ProviderConfig, snapshot: dict[str, Any]) -> None:
    config.priority = snapshot["priority"]
    config.enabled = snapshot["enabled"]
    config.config_data = snapshot["config_data"]
    for field in SECRET_FIELDS:
        field.store(config, snapshot.get(field.encrypted), snapshot.get(field.mask))
    config.deleted = False


async def rollback(
    session: AsyncSession,
    domain: Domain,
    tenant_id: str,
    request: RollbackRequest,
    *,
    changed_by: str,
    if_match: str | None = None,
) -> RenderedDocument:
    """Write an old version's content as a new version; brings a deleted configuration back."""
    await _start_write(session, domain, tenant_id, if_match)
    config, snapshot = await _rollback_source(
        session, await repository.lock_config_by_id(session, tenant_id, request.config_id), request
    )
    _restore(config, snapshot)
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


async def preview_rollback(
    session: AsyncSession,
    domain: Domain,
    tenant_id: str,
    request: RollbackRequest,
    *,
    if_match: str | None = None,
) -> bytes:
    """What `rollback` would change, with the same checks; reads only (no lock, no version, no
    invalidation)."""
    if if_match is not None:
        await _check_if_match(session, domain.defaults, tenant_id, if_match)
    config, snapshot = await _rollback_source(
        session, await repository.find_config(session, tenant_id, request.config_id), request
    )
    restored = {**snapshot, "deleted": False}
    changes = diff_snapshots(snapshot_of(config), restored)
    return render_rollback_preview(config, request.version, changes)

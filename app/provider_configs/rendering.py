"""The one renderer of the domain's answers: documents (masked or revealed), defaults, history.

Every answer is built here from string pieces, with the stored JSON spliced in: this runs on
every cache miss and every uncached read, where building dicts and encoding them was a fifth of
the cost. The pydantic models in schemas.py document these shapes, and a test validates every
answer against them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from app.core.crypto import mask
from app.core.secret_fields import MaskedSecretField, SnapshotSecret
from app.provider_configs.diff import FieldChange, changes_json, diff_json, diff_snapshots
from app.provider_configs.models import ProviderConfig, ProviderConfigVersion
from app.provider_configs.schemas import (
    PRIORITY_RANK,
    PROVIDER_TYPES,
    DefaultsDocument,
    list_field,
)

# The scope of a whole document's entity tag (a one-type document's is its type).
ALL_SCOPE = "all"

# The secret columns; a version snapshot keys their values by the same column names.
API_KEY = MaskedSecretField(
    ProviderConfig.__tablename__, "api_key", "api_key_encrypted", "api_key_mask"
)
API_SECRET = MaskedSecretField(
    ProviderConfig.__tablename__, "api_secret", "api_secret_encrypted", "api_secret_mask"
)
SECRET_FIELDS = (API_KEY, API_SECRET)
# Each version row keeps the ciphertexts it restores, still bound to the configuration's row.
SNAPSHOT_SECRETS = tuple(
    SnapshotSecret(ProviderConfigVersion.__tablename__, "snapshot", secret, "config_id")
    for secret in SECRET_FIELDS
)

# A stored row's secrets in clear, in SECRET_FIELDS order.
Reveal = Callable[[Row[Any]], tuple[str | None, str | None]]


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


# Part of every entity tag: changed whenever a document's bytes could change for the same versions
# (a new field, another order), so a tag never names two different bodies.
_ETAG_FORMAT = "1"


def document_etag(
    tenant_id: str,
    provider_type: str | None,
    versions: Iterable[tuple[str, int]],
    defaults: Defaults,
) -> str:
    """The strong entity tag of a masked document: derived from the (config id, version) of each
    configuration it shows, its scope (one type or all) and the defaults it falls back to.

    A version fixes every field of its entry, and versions only grow, so the same tag always
    names the same bytes; the scope leads the tag (`"map.…"`), so a write's `If-Match` knows
    which document it was read from.
    """
    scope = provider_type or ALL_SCOPE
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{_ETAG_FORMAT}\0{tenant_id}\0{scope}\0{defaults.tag}".encode())
    for config_id, version in sorted(versions):
        digest.update(f"\0{config_id}:{int(version)}".encode())
    return f'"{scope}.{digest.hexdigest()}"'


def etag_scope(etag: str) -> str | None:
    """The scope a tag of `document_etag` names (`all` or a provider type); None for another tag."""
    scope, dot, _ = etag.strip('"').partition(".")
    return scope if dot and (scope == ALL_SCOPE or scope in PROVIDER_TYPES) else None


@dataclass(frozen=True, slots=True)
class RenderedDocument:
    """A serialized document and its entity tag (None for a revealed one: it is never cached and
    must not share the masked document's tag)."""

    body: bytes
    etag: str | None

    def to_bytes(self) -> bytes:
        """The form kept in the shared cache: the tag, a newline, the body."""
        return f"{self.etag or ''}\n".encode() + self.body

    @classmethod
    def from_bytes(cls, raw: bytes) -> RenderedDocument:
        if raw[:1] == b"{":  # an entry stored before entries carried their tags
            return cls(raw, None)
        etag, _, body = raw.partition(b"\n")
        return cls(body, etag.decode() or None)


def render_document(
    tenant_id: str,
    rows: Sequence[Row[Any]],
    defaults: Defaults,
    provider_type: str | None,
    reveal: Reveal | None = None,
) -> RenderedDocument:
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
    body = "".join(parts).encode()
    if reveal is not None:
        return RenderedDocument(body, None)
    return RenderedDocument(
        body, document_etag(tenant_id, provider_type, ((r.id, r.version) for r in rows), defaults)
    )


def _history_item_json(row: ProviderConfigVersion, previous: dict[str, Any] | None) -> str:
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
        f'"deleted":{"true" if snapshot.get("deleted") else "false"}}},'
        f'"diff":{version_diff_json(row, previous)}}}'
    )


def version_diff_json(row: ProviderConfigVersion, previous: dict[str, Any] | None) -> str:
    """What `row` changed against the version before it (`previous`; None for the first)."""
    from_version = row.version - 1 if row.version > 1 else None
    return diff_json(from_version, row.version, diff_snapshots(previous, row.snapshot))


def render_history(
    rows: Sequence[ProviderConfigVersion],
    previous: Mapping[tuple[str, int], dict[str, Any]],
    next_cursor: str | None,
) -> bytes:
    """A history page; `previous` holds the snapshot before each row's (by config id, version)."""
    items = ",".join(
        _history_item_json(r, previous.get((r.config_id, r.version - 1))) for r in rows
    )
    return f'{{"items":[{items}],"next_cursor":{_nullable(next_cursor)}}}'.encode()


def render_diff(
    config: ProviderConfig, from_version: int, to_version: int, changes: Sequence[FieldChange]
) -> bytes:
    """The answer of GET /config/{tenant_id}/diff."""
    return (
        f'{{"config_id":{_quote(config.id)},"provider_type":{_quote(config.provider_type)},'
        f'"provider_name":{_quote(config.provider_name)},"from_version":{int(from_version)},'
        f'"to_version":{int(to_version)},"changes":{changes_json(changes)}}}'
    ).encode()


def render_rollback_preview(
    config: ProviderConfig, source_version: int, changes: Sequence[FieldChange]
) -> bytes:
    """The answer of a rollback with `dry_run=true`."""
    return (
        f'{{"dry_run":true,"config_id":{_quote(config.id)},'
        f'"provider_type":{_quote(config.provider_type)},'
        f'"provider_name":{_quote(config.provider_name)},"current_version":{int(config.version)},'
        f'"source_version":{int(source_version)},"new_version":{int(config.version) + 1},'
        f'"changes":{changes_json(changes)}}}'
    ).encode()


# --- defaults ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    """The settings' defaults, rendered once per type: masked for every caller, revealed for
    services."""

    masked_json: dict[str, str]
    revealed_json: dict[str, str]
    # Part of every document's entity tag: other defaults, other tags.
    tag: str

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
        tag = hashlib.blake2b(
            json.dumps(masked, sort_keys=True).encode(), digest_size=8
        ).hexdigest()
        return cls(masked, revealed, tag)

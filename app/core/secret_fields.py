"""Where each stored secret lives: its table, the name bound into its ciphertext, its columns.

The one owner of secret columns: every field defined (by its domain) registers here, so the key
tools (`junction keys status|rewrap`, app/operations/keys.py) and the health check find every
ciphertext without a list of their own. A copy of a field's ciphertext kept inside a JSON
column (a version snapshot) is a `SnapshotSecret`, registered the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.crypto import Keyring, Sealed, associated_data, mask

_FIELDS: list[SecretField] = []
_SNAPSHOTS: list[SnapshotSecret] = []


def registered_fields() -> tuple[SecretField, ...]:
    """Every secret column defined so far (the domains define theirs at import)."""
    return tuple(_FIELDS)


def registered_snapshots() -> tuple[SnapshotSecret, ...]:
    return tuple(_SNAPSHOTS)


@dataclass(frozen=True)
class SecretField:
    """One encrypted column of a table whose rows carry `tenant_id` and a row id (`id_column`).

    `name` is what the associated data binds the ciphertext to (with the table, tenant and row),
    so it must never change once values are stored; `encrypted` names the ciphertext column.
    """

    table: str
    name: str
    encrypted: str
    id_column: str = field(default="id", kw_only=True)

    def __post_init__(self) -> None:
        _FIELDS.append(self)

    def row_id(self, row: Any) -> str:
        return str(getattr(row, self.id_column))

    def aad(self, tenant_id: str, row_id: str) -> bytes:
        return associated_data(self.table, self.name, tenant_id, row_id)

    def stored(self, row: Any) -> str | None:
        """The ciphertext a row (a model instance or a selected row) holds."""
        value: str | None = getattr(row, self.encrypted)
        return value

    def seal(self, keyring: Keyring, row: Any, plaintext: str) -> None:
        """Encrypt `plaintext` for this row and store it in the row's ciphertext column."""
        aad = self.aad(row.tenant_id, self.row_id(row))
        setattr(row, self.encrypted, keyring.encrypt(plaintext, aad))

    def open(self, keyring: Keyring, tenant_id: str, row_id: str, stored: str) -> str:
        return keyring.decrypt(stored, self.aad(tenant_id, row_id))

    def sealed(self, keyring: Keyring, tenant_id: str, row_id: str, stored: str) -> Sealed:
        """The stored value parsed for `Sealed.open`, still encrypted."""
        return keyring.sealed(stored, self.aad(tenant_id, row_id))

    def open_row(self, keyring: Keyring, row: Any) -> str | None:
        """The row's secret in clear; None when it holds none."""
        stored = self.stored(row)
        if stored is None:
            return None
        return self.open(keyring, row.tenant_id, self.row_id(row), stored)


@dataclass(frozen=True)
class MaskedSecretField(SecretField):
    """A secret whose masked form is kept in its own column, so reads never decrypt."""

    mask: str

    def stored_mask(self, row: Any) -> str | None:
        value: str | None = getattr(row, self.mask)
        return value

    def store(self, row: Any, encrypted: str | None, masked: str | None) -> None:
        setattr(row, self.encrypted, encrypted)
        setattr(row, self.mask, masked)

    def seal_masked(self, keyring: Keyring, row: Any, plaintext: str | None) -> None:
        """Encrypt `plaintext` for this row and keep its mask beside it (None: no secret)."""
        if plaintext is None:
            self.store(row, None, None)
            return
        encrypted = keyring.encrypt(plaintext, self.aad(row.tenant_id, self.row_id(row)))
        self.store(row, encrypted, mask(plaintext))


@dataclass(frozen=True)
class SnapshotSecret:
    """A copy of `field`'s ciphertext kept under the key `field.encrypted` of a JSON column of
    another table (a version snapshot), still bound to the owning row: its id is the snapshot
    row's `owner_id_column`."""

    table: str
    json_column: str
    field: SecretField
    owner_id_column: str

    def __post_init__(self) -> None:
        _SNAPSHOTS.append(self)

    @property
    def key(self) -> str:
        return self.field.encrypted

    @property
    def label(self) -> str:
        return f"{self.table}.{self.json_column}.{self.key}"

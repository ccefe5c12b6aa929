"""Where each stored secret lives: its table, the name bound into its ciphertext, its columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.crypto import Keyring, associated_data


@dataclass(frozen=True)
class SecretField:
    """One encrypted column of a table whose rows carry `tenant_id` and `id`.

    `name` is what the associated data binds the ciphertext to (with the table, tenant and row),
    so it must never change once values are stored; `encrypted` names the ciphertext column.
    """

    table: str
    name: str
    encrypted: str

    def aad(self, tenant_id: str, row_id: str) -> bytes:
        return associated_data(self.table, self.name, tenant_id, row_id)

    def stored(self, row: Any) -> str | None:
        """The ciphertext a row (a model instance or a selected row) holds."""
        value: str | None = getattr(row, self.encrypted)
        return value

    def seal(self, keyring: Keyring, row: Any, plaintext: str) -> None:
        """Encrypt `plaintext` for this row and store it in the row's ciphertext column."""
        setattr(row, self.encrypted, keyring.encrypt(plaintext, self.aad(row.tenant_id, row.id)))

    def open(self, keyring: Keyring, tenant_id: str, row_id: str, stored: str) -> str:
        return keyring.decrypt(stored, self.aad(tenant_id, row_id))

    def open_row(self, keyring: Keyring, row: Any) -> str | None:
        """The row's secret in clear; None when it holds none."""
        stored = self.stored(row)
        if stored is None:
            return None
        return self.open(keyring, row.tenant_id, row.id, stored)


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

"""Reading a tenant's configuration document: from the database on a cache miss, or with its
secrets in clear for a caller allowed to see them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.crypto import DecryptionError, Keyring
from app.core.db import single_statement_reader
from app.core.secret_fields import MaskedSecretField
from app.provider_configs import repository
from app.provider_configs.exceptions import SecretUndecryptable
from app.provider_configs.rendering import (
    API_KEY,
    API_SECRET,
    Defaults,
    RenderedDocument,
    Reveal,
    render_document,
)


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
) -> RenderedDocument:
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
    the three an uncached read costs (behind PgBouncer they are paid: see single_statement_reader).
    """
    reader = single_statement_reader(engine)

    async def load(tenant_id: str, provider_type: str | None) -> RenderedDocument:
        async with reader.connect() as connection:
            rows = await repository.fetch_live_configs(connection, tenant_id, provider_type)
        return render_document(tenant_id, rows, defaults, provider_type)

    return load

"""Encryption keys at rest: which key each stored secret is under, and re-encryption under the
primary key (`junction keys status|rewrap`), plus the count of secrets no key opens (health).

Every location comes from the one owner of secret columns (app/core/secret_fields.py): a column
of a table, or a ciphertext copied into a JSON snapshot. A stored value reads
`v1.<key id>.<...>`, so the key id is found in SQL and counts are a GROUP BY.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, func, literal, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.crypto import DecryptionError, Keyring
from app.core.db import Base
from app.core.secret_fields import (
    SecretField,
    SnapshotSecret,
    registered_fields,
    registered_snapshots,
)
from app.operations.progress import Progress

logger = logging.getLogger("junction.operations.keys")

REWRAP_BATCH = 500
# The health check counts at most this many values per location: enough to say "degraded".
UNKNOWN_KEY_COUNT_CAP = 1000


def _domains_loaded() -> None:
    # The domains define (and so register) their secret fields where they use them.
    import app.models  # noqa: F401
    import app.monitoring.webhooks  # noqa: F401
    import app.provider_configs.rendering  # noqa: F401
    import app.tokens.sealing  # noqa: F401


@dataclass(frozen=True)
class Location:
    """Where ciphertexts are stored: a column, or a key of a JSON column's snapshots."""

    label: str
    table: Table
    row_id: Any  # the column the associated data binds to (the row, or the snapshot's owner)
    key: Any  # the column whose value identifies the row for the update
    value: ColumnElement[Any]  # the stored ciphertext, as text
    field: SecretField
    snapshot: SnapshotSecret | None = None

    def aad(self, tenant_id: str, row_id: Any) -> bytes:
        return self.field.aad(tenant_id, str(row_id))


def locations() -> list[Location]:
    """Every place a ciphertext is stored, columns first, then snapshot copies."""
    _domains_loaded()
    found: list[Location] = []
    for secret in registered_fields():
        table = Base.metadata.tables[secret.table]
        column = table.c[secret.encrypted]
        found.append(
            Location(
                label=f"{secret.table}.{secret.encrypted}",
                table=table,
                row_id=table.c[secret.id_column],
                key=table.c[secret.id_column],
                value=column,
                field=secret,
            )
        )
    for snapshot in registered_snapshots():
        table = Base.metadata.tables[snapshot.table]
        value = table.c[snapshot.json_column][snapshot.key].as_string()
        found.append(
            Location(
                label=snapshot.label,
                table=table,
                row_id=table.c[snapshot.owner_id_column],
                key=table.c.id,
                value=value,
                field=snapshot.field,
                snapshot=snapshot,
            )
        )
    return found


def _key_id(value: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """The key id of `v1.<kid>.<body>`, in SQL."""
    if dialect == "postgresql":
        return func.split_part(value, ".", 2)
    after_version = func.substr(value, 4)
    return func.substr(value, 4, func.instr(after_version, ".") - 1)


def _under_any(value: ColumnElement[Any], key_ids: Sequence[str]) -> ColumnElement[bool]:
    # Key ids are alphanumeric (crypto._parse_key), so they hold no LIKE wildcard.
    return or_(*(value.like(f"v1.{kid}.%") for kid in key_ids))


# --- status ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyCount:
    location: str
    key_id: str
    rows: int
    known: bool
    primary: bool


async def status(engine: AsyncEngine, keyring: Keyring) -> list[KeyCount]:
    """Rows per key id for every location (one GROUP BY each)."""
    counts: list[KeyCount] = []
    async with engine.connect() as conn:
        dialect = conn.dialect.name
        for location in locations():
            kid = _key_id(location.value, dialect).label("kid")
            query = (
                select(kid, func.count().label("rows"))
                .select_from(location.table)
                .where(location.value.is_not(None))
                .group_by(kid)
                .order_by(kid)
            )
            for key_id, rows in (await conn.execute(query)).all():
                counts.append(
                    KeyCount(
                        location.label,
                        str(key_id),
                        int(rows),
                        known=key_id in keyring.key_ids,
                        primary=key_id == keyring.primary_kid,
                    )
                )
    return counts


async def count_unknown_keys(
    conn: AsyncConnection, keyring: Keyring, *, cap: int = UNKNOWN_KEY_COUNT_CAP
) -> int:
    """Stored values written under a key that is not in the keyring (at most `cap` per
    location, so the query stays bounded however many there are)."""
    total = 0
    for location in locations():
        unknown = (
            select(literal(1))
            .select_from(location.table)
            .where(location.value.is_not(None), not_(_under_any(location.value, keyring.key_ids)))
            .limit(cap)
            .subquery()
        )
        total += int(await conn.scalar(select(func.count()).select_from(unknown)) or 0)
    return total


# --- rewrap ------------------------------------------------------------------------------------


@dataclass
class RewrapResult:
    location: str
    rewrapped: int = 0
    changed: int = 0  # written concurrently between the read and the update: left as it is
    undecryptable: int = 0  # under a key not in the keyring, or failing authentication
    left: int = 0  # still not under the primary key after the run (run again, or see above)


async def rewrap(
    engine: AsyncEngine,
    keyring: Keyring,
    *,
    batch_size: int = REWRAP_BATCH,
    stream: Any = None,
) -> list[RewrapResult]:
    """Re-encrypt every value not under the primary key, with its own associated data.

    Batched (a transaction per batch) and resumable: a run reads only values not under the
    primary key, so an interrupted one continues where it stopped. Safe beside the service:
    each update compares-and-sets on the ciphertext it read, so a value written meanwhile
    (already under the primary key) is left alone; on PostgreSQL rows locked by a refresh in
    progress are skipped for this run (`SKIP LOCKED`) rather than waited for.
    """
    results = []
    for location in locations():
        results.append(await _rewrap_location(engine, keyring, location, batch_size, stream))
    return results


def _pending(location: Location, keyring: Keyring) -> ColumnElement[bool]:
    return and_(
        location.value.is_not(None), not_(location.value.like(f"v1.{keyring.primary_kid}.%"))
    )


async def _rewrap_location(
    engine: AsyncEngine, keyring: Keyring, location: Location, batch_size: int, stream: Any
) -> RewrapResult:
    result = RewrapResult(location.label)
    total = await _count_pending(engine, keyring, location)
    if total == 0:
        return result
    after: Any = None
    with Progress(f"rewrap {location.label}", total=total, stream=stream) as progress:
        while True:
            async with engine.begin() as conn:
                rows = await _next_batch(conn, keyring, location, after, batch_size)
                if not rows:
                    break
                for row in rows:
                    await _rewrap_row(conn, keyring, location, row, result)
                after = rows[-1].key
            progress.advance(len(rows))
    result.left = await _count_pending(engine, keyring, location)
    return result


async def _count_pending(engine: AsyncEngine, keyring: Keyring, location: Location) -> int:
    query = select(func.count()).select_from(location.table).where(_pending(location, keyring))
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def _next_batch(
    conn: AsyncConnection, keyring: Keyring, location: Location, after: Any, batch_size: int
) -> Sequence[Any]:
    columns = [
        location.key.label("key"),
        location.row_id.label("row_id"),
        location.table.c.tenant_id.label("tenant_id"),
        location.value.label("stored"),
    ]
    if location.snapshot is not None:
        columns.append(location.table.c[location.snapshot.json_column].label("document"))
    query = select(*columns).where(_pending(location, keyring))
    if after is not None:
        query = query.where(location.key > after)
    query = query.order_by(location.key).limit(batch_size)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return (await conn.execute(query)).all()


async def _rewrap_row(
    conn: AsyncConnection, keyring: Keyring, location: Location, row: Any, result: RewrapResult
) -> None:
    aad = location.aad(row.tenant_id, row.row_id)
    try:
        plaintext = keyring.decrypt(row.stored, aad)
    except DecryptionError:
        result.undecryptable += 1
        return
    sealed = keyring.encrypt(plaintext, aad)
    if location.snapshot is not None:
        document = {**row.document, location.snapshot.key: sealed}
        values: dict[str, Any] = {location.snapshot.json_column: document}
    else:
        values = {location.field.encrypted: sealed}
    statement = (
        update(location.table)
        .where(location.key == row.key, location.value == row.stored)
        .values(values)
    )
    updated = await conn.execute(statement)
    if updated.rowcount == 1:
        result.rewrapped += 1
    else:
        result.changed += 1


# --- the health check's view -------------------------------------------------------------------


@dataclass
class UnknownKeyCheck:
    """The count of stored values no key in ENCRYPTION_KEYS opens, for /api/v1/health.

    Counted in the background when health is asked and the last count is older than
    `interval_s` (the first time: the first health request), so health answers from memory:
    None until the first count is in. Not at start-up: a replica that nobody probes counts
    nothing, and the count's queries never run beside a request that did not ask for them.
    """

    engine: AsyncEngine
    keyring: Keyring
    interval_s: float
    count: int | None = None
    counted_at: float | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def current(self) -> int | None:
        """The last count; starts a recount when it is older than the interval."""
        stale = self.counted_at is None or time.monotonic() - self.counted_at >= self.interval_s
        if stale:
            self._spawn()
        return self.count

    def _spawn(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._recount(), name="unknown-key-count")

    async def _recount(self) -> None:
        try:
            async with self.engine.connect() as conn:
                self.count = await count_unknown_keys(conn, self.keyring)
        except Exception:
            # The database check reports an unreachable database; keep the last count.
            logger.warning("could not count the secrets under unknown keys", exc_info=True)
        finally:
            self.counted_at = time.monotonic()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# --- the commands ------------------------------------------------------------------------------


def _print_status(counts: Sequence[KeyCount], out: Any) -> int:
    width = max([len(c.location) for c in counts] + [len("location")])
    print(f"{'location':<{width}}  {'key id':<10}  {'rows':>8}", file=out)
    for count in counts:
        note = " (primary)" if count.primary else "" if count.known else " (not in ENCRYPTION_KEYS)"
        print(f"{count.location:<{width}}  {count.key_id:<10}  {count.rows:>8}{note}", file=out)
    primary = sum(c.rows for c in counts if c.primary)
    older = sum(c.rows for c in counts if c.known and not c.primary)
    unknown = sum(c.rows for c in counts if not c.known)
    print(
        f"total: {primary} under the primary key, {older} under older keys, "
        f"{unknown} under keys not in ENCRYPTION_KEYS",
        file=out,
    )
    return 1 if unknown else 0


async def status_command(engine: AsyncEngine, keyring: Keyring, out: Any) -> int:
    """`junction keys status`: exit 1 when some value is under a key not in ENCRYPTION_KEYS."""
    return _print_status(await status(engine, keyring), out)


async def rewrap_command(
    engine: AsyncEngine, keyring: Keyring, out: Any, *, batch_size: int, progress: Any = None
) -> int:
    """`junction keys rewrap`: exit 1 when some value is still not under the primary key."""
    results = await rewrap(engine, keyring, batch_size=batch_size, stream=progress)
    for result in results:
        if result.rewrapped or result.left:
            print(
                f"{result.location}: {result.rewrapped} re-encrypted, {result.changed} changed "
                f"meanwhile, {result.undecryptable} undecryptable, {result.left} left",
                file=out,
            )
    left = sum(result.left for result in results)
    if left:
        print(
            f"{left} values are still not under the primary key '{keyring.primary_kid}': run "
            "again; values under keys not in ENCRYPTION_KEYS need their key back first",
            file=out,
        )
        return 1
    print(f"every stored secret is under the primary key '{keyring.primary_kid}'", file=out)
    return 0


def command(args: argparse.Namespace) -> int:
    """`junction keys status|rewrap`."""
    from app.core.config import Settings
    from app.operations.engine import command_engine, run_to_end

    settings = Settings()
    keyring = Keyring(settings.encryption_keys)

    async def run() -> int:
        async with command_engine(settings) as engine:
            if args.action == "status":
                return await status_command(engine, keyring, sys.stdout)
            return await rewrap_command(engine, keyring, sys.stdout, batch_size=args.batch)

    return run_to_end(run())

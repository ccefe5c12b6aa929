"""`junction verify-db A B`: row counts and checksums of every table on both sides, compared."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TextIO

from sqlalchemy.exc import DBAPIError

from app.operations import databases
from app.operations.checksum import TableSum, sum_table
from app.operations.engine import run_to_end


@dataclass(frozen=True)
class TableComparison:
    table: str
    a: TableSum
    b: TableSum

    @property
    def matches(self) -> bool:
        return self.a.matches(self.b)


async def verify_databases(url_a: str, url_b: str) -> list[TableComparison]:
    """Each side read in one snapshot; raises `Refused` for a database not at the latest schema."""
    a = databases.open_database(url_a, must_exist=True)
    b = databases.open_database(url_b, must_exist=True)
    try:
        await databases.require_head(a, "first database")
        await databases.require_head(b, "second database")
        comparisons = []
        async with databases.snapshot(a) as conn_a, databases.snapshot(b) as conn_b:
            for table in databases.copied_tables():
                # Both sides at once: one database works while this process hashes the other.
                sum_a, sum_b = await asyncio.gather(
                    sum_table(conn_a, table, label=f"A {table.name}"),
                    sum_table(conn_b, table, label=f"B {table.name}"),
                )
                comparisons.append(TableComparison(table.name, sum_a, sum_b))
        return comparisons
    finally:
        await a.dispose()
        await b.dispose()


def print_comparison(
    rows: list[tuple[str, TableSum, TableSum | None]], out: TextIO, *, names: tuple[str, str]
) -> list[str]:
    """A line per table (rows and checksum on each side); returns the tables that differ."""
    first, second = names
    print(
        f"{'table':<32} {'rows ' + first:>12} {'rows ' + second:>12}  "
        f"{'checksum ' + first:<18} {'checksum ' + second:<18} result",
        file=out,
    )
    different = []
    for table, a, b in rows:
        same = b is not None and a.matches(b)
        if not same:
            different.append(table)
        b_rows = str(b.rows) if b is not None else "-"
        b_sum = b.checksum if b is not None else "-"
        print(
            f"{table:<32} {a.rows:>12} {b_rows:>12}  {a.checksum:<18} {b_sum:<18} "
            f"{'ok' if same else 'DIFFERENT'}",
            file=out,
        )
    return different


def run_command(url_a: str, url_b: str, *, out: TextIO) -> int:
    """The command: exit 0 when every table matches, 1 when one differs, 2 when refused."""
    try:
        comparisons = run_to_end(verify_databases(url_a, url_b))
    except databases.Refused as exc:
        print(f"junction verify-db: refused: {exc}", file=sys.stderr)
        return databases.EXIT_REFUSED
    except (DBAPIError, OSError) as exc:
        print(f"junction verify-db: failed: {databases.describe_failure(exc)}", file=sys.stderr)
        return databases.EXIT_FAILED
    different = print_comparison([(c.table, c.a, c.b) for c in comparisons], out, names=("A", "B"))
    if different:
        print(f"junction verify-db: different: {', '.join(different)}", file=sys.stderr)
        return databases.EXIT_DIFFERENT
    print(f"identical: {len(comparisons)} tables", file=out)
    return databases.EXIT_OK

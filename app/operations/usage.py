"""`junction usage rerate --from --to`: re-price the events of a range after a price correction."""

from __future__ import annotations

import argparse
import sys

from app.core.config import Settings
from app.core.db import utcnow
from app.operations.engine import command_app, run_to_end
from app.usage import rerate, summaries
from app.usage.exceptions import InvalidUsageInput


def command(args: argparse.Namespace) -> int:
    """0 done, 2 a bad range."""
    try:
        window = summaries.parse_range(args.start, args.end, now=utcnow(), limit=None)
    except InvalidUsageInput as exc:
        print(f"junction usage rerate: {exc.detail}", file=sys.stderr)
        return 2

    async def run() -> rerate.RerateResult:
        async with command_app(Settings()) as state:
            return await rerate.rerate_range(
                state.sessionmaker,
                state.usage_prices,
                window.start,
                window.end,
                batch=args.batch,
                now=utcnow(),
            )

    result = run_to_end(run())
    print(
        f"rerated {window.start.isoformat()} .. {window.end.isoformat()}: {result.scanned} events "
        f"read, {result.changed} re-priced; {result.batches} batches, each its own transaction"
    )
    return 0

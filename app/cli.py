"""The `junction` command: serve, migrate, mint a development token, and operators' tools."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError

from app import __version__
from app.core.auth import ROLE_ADMIN, ROLE_SERVICE, mint_token
from app.core.config import ConfigurationError, Settings
from app.devtools import dev_provider


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.core.logging import uvicorn_log_config
    from app.core.metrics_files import multiprocess_directory

    settings = Settings()
    if args.workers > 1 and not settings.redis_url:
        # Without Redis, locks and caches live in one process: two workers would each refresh
        # the same token (and a provider that detects refresh-token reuse revokes the grant).
        print("junction: --workers > 1 needs REDIS_URL (shared locks and cache)", file=sys.stderr)
        return 2
    # Several workers share their Prometheus figures through files in a fresh directory.
    with multiprocess_directory(args.workers):
        uvicorn.run(
            "app.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            # A worker must answer the supervisor's ping within this many seconds or is killed
            # and started again; a new one answers only once it has imported this module, which
            # took over uvicorn's 5 s (up to 20 s) on a busy 2-core machine: restarts for ever.
            timeout_worker_healthcheck=60,
            proxy_headers=True,
            log_level=settings.log_level.lower(),
            log_config=uvicorn_log_config(settings.log_level, settings.json_logs),
            access_log=False,  # the app logs requests itself, with the request id
            server_header=False,  # no "Server: uvicorn": the stack is nobody's business
            # A request head over REQUEST_MAX_HEADER_BYTES is refused (431) while it arrives,
            # not parsed first: uvicorn's option for its h11 parser, read by this protocol too.
            http="app.core.uvicorn_protocol:HeadLimitedHttpToolsProtocol",
            h11_max_incomplete_event_size=settings.request_max_header_bytes,
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app.core import migrations

    settings = Settings()
    migrations.upgrade(settings.database_url, args.revision)
    print(f"schema at {args.revision} ({settings.database_url.split('://', 1)[0]})")
    return 0


def _token(args: argparse.Namespace) -> int:
    settings = Settings()
    token = mint_token(
        settings,
        sub=args.sub,
        tenants=args.tenant,
        roles=args.role or [],
        ttl_s=args.ttl,
    )
    print(token)
    return 0


def _admin_link(args: argparse.Namespace) -> int:
    from app.admin.sessions import issue_link, link_url
    from app.operations.engine import command_app, run_to_end

    async def issue() -> str:
        async with command_app(Settings()) as state, state.sessionmaker() as session:
            secret = await issue_link(session, state.settings, subject=args.sub)
            await session.commit()
            return secret

    print(link_url(args.base_url, run_to_end(issue())))
    return 0


def _copy_db(args: argparse.Namespace) -> int:
    from app.operations import copy_db

    return copy_db.run_command(
        args.source, args.target, resume=args.resume, batch_size=args.batch_size, out=sys.stdout
    )


def _verify_db(args: argparse.Namespace) -> int:
    from app.operations import verify_db

    return verify_db.run_command(args.a, args.b, out=sys.stdout)


_EXIT_CODES = (
    "exit codes: 0 identical, 1 a table differs (named), 2 usage error or refused (nothing "
    "written), 3 a database failed part-way"
)


def _operation(module: str) -> Callable[[argparse.Namespace], int]:
    """The `command(args)` of `app.operations.<module>`, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        operation = importlib.import_module(f"app.operations.{module}")
        command: Callable[[argparse.Namespace], int] = operation.command
        try:
            return command(args)
        except (DBAPIError, OSError, TimeoutError) as exc:
            # Junction's database cannot be reached or fails mid-command: one line and a code
            # of its own, not a traceback whose exit 1 would read as "values left" or "refused".
            from app.operations.databases import EXIT_FAILED, describe_failure

            print(
                f"junction {args.command}: database failed: {describe_failure(exc)}",
                file=sys.stderr,
            )
            return EXIT_FAILED

    return run


def _add_operations(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="encryption keys: rows per key id, re-encryption under the primary key",
        description="status: rows per key id of every encrypted column (exit 1 when some are "
        "under a key not in ENCRYPTION_KEYS); rewrap: re-encrypt everything under the first key "
        "of ENCRYPTION_KEYS, batched, resumable, safe while the service runs (exit 1 when "
        "some value is left, 3 when the database failed)",
    )
    keys.add_argument("action", choices=["status", "rewrap"], help="status or rewrap")
    keys.add_argument("--batch", type=int, default=500, help="rows per transaction (rewrap)")
    keys.set_defaults(func=_operation("keys"))

    reset = commands.add_parser(
        "reset",
        help="factory reset: delete all data, keeping the workspaces and their tiers",
        description="Deletes every row but the workspaces, their tiers and the offboarding "
        "records (--all removes those too); revocations are always kept. Prints the rows "
        "removed per table. Asks first unless --yes; refused outside ENVIRONMENT=dev unless "
        "--force. Exit 0 done, 1 not confirmed, 2 refused, 3 the database failed.",
    )
    reset.add_argument("--all", action="store_true", help="remove the workspaces too")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.add_argument("--force", action="store_true", help="allow outside ENVIRONMENT=dev")
    reset.set_defaults(func=_operation("reset"))

    imports = commands.add_parser(
        "import",
        help="import from an older service (provider-configs)",
        description="provider-configs: the older provider-configuration service's "
        "provider_configs and config_versions tables (PostgreSQL), with their whole history; "
        "keys are encrypted on the way in and never printed; rows that do not fit are "
        "reported; a second run imports nothing twice. Exit 0 all imported, 1 some rows "
        "refused, 2 the source could not be read, 3 Junction's database failed.",
    )
    imports.add_argument("what", choices=["provider-configs"], help="what to import")
    imports.add_argument("--from", dest="source", required=True, help="the source database URL")
    imports.add_argument("--tenant", help="only this tenant's configurations")
    imports.set_defaults(func=_operation("import_configs"))

    usage = commands.add_parser(
        "usage",
        help="usage maintenance: rerate (re-price a range after a price correction)",
        description="rerate: recompute the cost and price version of every usage event that "
        "occurred in [--from, --to) with the current price table (USAGE_MODEL_PRICES over the "
        "defaults); counters and daily rollups follow in the same transaction, one per batch. "
        "Idempotent: events already at the current price are left alone, so it can be run again "
        "or resumed. Exit 0 done, 2 a bad range.",
    )
    usage.add_argument("action", choices=["rerate"], help="rerate")
    usage.add_argument(
        "--from",
        dest="start",
        required=True,
        help="ISO 8601 date or date-time (UTC when no offset), inclusive",
    )
    usage.add_argument(
        "--to",
        dest="end",
        required=True,
        help="ISO 8601, exclusive; a date alone includes that whole day",
    )
    usage.add_argument("--batch", type=int, default=1000, help="events per transaction")
    usage.set_defaults(func=_operation("usage"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="junction",
        description=__doc__,
        epilog="Settings come from the environment or a .env file (see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="start the HTTP service (uvicorn)",
        description="Serve the API with uvicorn. Settings come from the environment.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default %(default)s); more than one needs REDIS_URL, and "
        "/metrics then adds up every worker's figures",
    )
    serve.set_defaults(func=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="bring the schema to the latest migration",
        description="Run the Alembic migrations on DATABASE_URL.",
    )
    migrate.add_argument(
        "--revision", default="head", help="the revision to reach (default %(default)s)"
    )
    migrate.set_defaults(func=_migrate)

    token = commands.add_parser(
        "token",
        help="mint a development bearer token",
        description="Print a bearer token signed with AUTH_JWT_SECRET (HS256), for trying the "
        "API by hand.",
    )
    token.add_argument(
        "--tenant",
        action="append",
        required=True,
        help="a tenant the token may act for; repeatable; '*' means every tenant",
    )
    token.add_argument(
        "--role",
        action="append",
        choices=[ROLE_ADMIN, ROLE_SERVICE],
        help="a role the token carries; repeatable (default: none)",
    )
    token.add_argument(
        "--sub", default="dev-user", help="the token's subject, the caller (default %(default)s)"
    )
    token.add_argument(
        "--ttl", type=int, default=3600, help="lifetime in seconds (default %(default)s)"
    )
    token.set_defaults(func=_token)

    admin_link = commands.add_parser(
        "admin-link",
        help="print a one-time sign-in link to the admin console",
        description="Print a URL that opens one admin console session (/admin): single use, "
        "valid ADMIN_LINK_TTL_S seconds (default 600), stored only as its hash.",
    )
    admin_link.add_argument(
        "--base-url",
        default="http://127.0.0.1:8000",
        help="where the operator's browser reaches the service (default %(default)s)",
    )
    admin_link.add_argument(
        "--sub",
        default="console-admin",
        help="who signs in, as recorded in the history of what they change (default %(default)s)",
    )
    admin_link.set_defaults(func=_admin_link)

    dev_provider.add_command(commands)
    _add_operations(commands)
    copy_db = commands.add_parser(
        "copy-db",
        help="copy every table to another database (SQLite or PostgreSQL), then verify it",
        description="Copy every table from one database to another and verify the copy "
        "(row counts and checksums). The target is migrated first and must be empty, unless "
        "--resume. See docs/operations.md.",
        epilog=_EXIT_CODES,
    )
    copy_db.add_argument(
        "--from", dest="source", required=True, metavar="URL", help="the database to copy"
    )
    copy_db.add_argument(
        "--to", dest="target", required=True, metavar="URL", help="the database to copy into"
    )
    copy_db.add_argument(
        "--resume", action="store_true", help="continue an interrupted copy into this target"
    )
    copy_db.add_argument(
        "--batch-size",
        type=int,
        default=100_000,
        metavar="N",
        help="rows per batch (default %(default)s)",
    )
    copy_db.set_defaults(func=_copy_db)

    verify_db = commands.add_parser(
        "verify-db",
        help="compare two databases table by table (row counts and checksums)",
        description="Compare every table of two databases (SQLite or PostgreSQL), each read in "
        "one snapshot: row counts and an order-independent checksum.",
        epilog=_EXIT_CODES,
    )
    verify_db.add_argument("a", metavar="URL_A", help="one database")
    verify_db.add_argument("b", metavar="URL_B", help="the other database")
    verify_db.set_defaults(func=_verify_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"junction: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

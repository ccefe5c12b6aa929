"""The `junction` command: serve, migrate, mint a development token, copy and verify databases."""

from __future__ import annotations

import argparse
import sys

from app.core.auth import ROLE_ADMIN, ROLE_SERVICE, mint_token
from app.core.config import ConfigurationError, Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings()
    if args.workers > 1 and not settings.redis_url:
        # Without Redis, locks and caches live in one process: two workers would each refresh
        # the same token (and a provider that detects refresh-token reuse revokes the grant).
        print("junction: --workers > 1 needs REDIS_URL (shared locks and cache)", file=sys.stderr)
        return 2
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
        log_level=settings.log_level.lower(),
        access_log=False,  # the app logs requests itself, with the request id
        server_header=False,  # no "Server: uvicorn": the stack is nobody's business
        # A request head over REQUEST_MAX_HEADER_BYTES is refused (431) while it arrives, not
        # parsed first: uvicorn's option for its h11 parser, read by this httptools protocol too.
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="junction", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the HTTP service (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)

    migrate = commands.add_parser("migrate", help="bring the schema to the latest migration")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=_migrate)

    token = commands.add_parser("token", help="mint a development bearer token")
    token.add_argument("--tenant", action="append", required=True, help="repeatable; '*' = all")
    token.add_argument("--role", action="append", choices=[ROLE_ADMIN, ROLE_SERVICE])
    token.add_argument("--sub", default="dev-user")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(func=_token)

    copy_db = commands.add_parser(
        "copy-db",
        help="copy every table to another database (SQLite or PostgreSQL), then verify it",
        description="Copy every table from one database to another and verify the copy "
        "(row counts and checksums). The target is migrated first and must be empty, unless "
        "--resume. See docs/operations.md.",
        epilog=_EXIT_CODES,
    )
    copy_db.add_argument("--from", dest="source", required=True, metavar="URL")
    copy_db.add_argument("--to", dest="target", required=True, metavar="URL")
    copy_db.add_argument(
        "--resume", action="store_true", help="continue an interrupted copy into this target"
    )
    copy_db.add_argument("--batch-size", type=int, default=10_000, metavar="N", help="rows")
    copy_db.set_defaults(func=_copy_db)

    verify_db = commands.add_parser(
        "verify-db",
        help="compare two databases table by table (row counts and checksums)",
        description="Compare every table of two databases (SQLite or PostgreSQL), each read in "
        "one snapshot: row counts and an order-independent checksum.",
        epilog=_EXIT_CODES,
    )
    verify_db.add_argument("a", metavar="URL_A")
    verify_db.add_argument("b", metavar="URL_B")
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

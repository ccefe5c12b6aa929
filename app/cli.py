"""The `junction` command: serve, migrate, mint a development token, and operators' tools."""

from __future__ import annotations

import argparse
import asyncio
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


def _keys(args: argparse.Namespace) -> int:
    from app.core.crypto import Keyring
    from app.operations import keys
    from app.operations.engine import command_engine

    settings = Settings()
    keyring = Keyring(settings.encryption_keys)

    async def run() -> int:
        async with command_engine(settings) as engine:
            if args.action == "status":
                return await keys.status_command(engine, keyring, sys.stdout)
            return await keys.rewrap_command(engine, keyring, sys.stdout, batch_size=args.batch)

    return asyncio.run(run())


def _add_operations(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="encryption keys: rows per key id, re-encryption under the primary key",
        description="status: rows per key id of every encrypted column (exit 1 when some are "
        "under a key not in ENCRYPTION_KEYS); rewrap: re-encrypt everything under the first key "
        "of ENCRYPTION_KEYS, batched, resumable, safe while the service runs (exit 1 when "
        "some value is left)",
    )
    keys.add_argument("action", choices=["status", "rewrap"])
    keys.add_argument("--batch", type=int, default=500, help="rows per transaction (rewrap)")
    keys.set_defaults(func=_keys)


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
    _add_operations(commands)
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

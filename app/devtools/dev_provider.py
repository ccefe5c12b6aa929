"""`junction dev-provider`: the local OAuth 2.0 provider as a command, to try the whole flow on one
machine (connect, fresh token, forced refresh, disconnect) without an account anywhere."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from app.devtools.oauth_provider import LocalOAuthServer

PROVIDER_NAME = "dev_provider"
CALLBACK_PATH = "/token-management/auth/callback"


def add_command(commands: Any) -> None:
    """Register `dev-provider` with the `junction` command's subparsers."""
    parser = commands.add_parser(
        "dev-provider",
        help="run a local OAuth 2.0 provider to try connections against",
        description="A local OAuth 2.0 authorization server (consent page, tokens with "
        "refresh-token rotation, revocation) to register with Junction as a custom provider "
        "and try the whole flow on one machine. It prints the client to register.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9000, help="port (default 9000; 0: any)")
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="access-token lifetime (default 3600; 0: tokens that never expire)",
    )
    parser.add_argument("--client-id", default="dev-client", help="default: dev-client")
    parser.add_argument("--client-secret", help="default: a random one, printed")
    parser.add_argument(
        "--junction-url",
        default="http://127.0.0.1:8000",
        help="where Junction listens, for the redirect URI to register",
    )
    parser.add_argument(
        "--write-client",
        type=Path,
        metavar="PATH",
        help="also write the client registration body (JSON, with the secret) to PATH",
    )
    parser.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve every authorization request without showing the consent page",
    )
    parser.add_argument(
        "--no-rotation",
        action="store_true",
        help="keep the refresh token on refresh (default: a new one each time)",
    )
    parser.set_defaults(func=run)


def client_registration(server: LocalOAuthServer, junction_url: str) -> dict[str, Any]:
    """The body of `POST /token-management/clients` that registers `server` as a custom provider."""
    return {
        "provider": PROVIDER_NAME,
        "name": "Junction dev provider",
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "redirect_uri": junction_url.rstrip("/") + CALLBACK_PATH,
        "scopes": ["read"],
        **server.provider_urls(),
    }


def run(args: argparse.Namespace) -> int:
    server = LocalOAuthServer(
        client_id=args.client_id,
        client_secret=args.client_secret or "dev-" + secrets.token_urlsafe(18),
        token_lifetime_s=args.token_lifetime,
        host=args.host,
        port=args.port,
    )
    if args.token_lifetime == 0:
        server.token_lifetime_s = None
    server.consent_page = not args.auto_approve
    server.rotate_refresh_tokens = not args.no_rotation
    try:
        server.start()
    except OSError as exc:
        print(
            f"junction: dev-provider cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 2
    registration = json.dumps(client_registration(server, args.junction_url), indent=2)
    if args.write_client is not None:
        # It holds the client secret: readable by its owner only.
        descriptor = os.open(args.write_client, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(registration + "\n")
    lifetime = f"{args.token_lifetime} s" if args.token_lifetime else "never expire"
    print(
        f"Junction dev provider on {server.base_url}\n"
        f"  authorize  {server.base_url}/authorize  (a consent page"
        f"{'; --auto-approve: skipped' if args.auto_approve else ''})\n"
        f"  token      {server.base_url}/token  (access tokens {lifetime}; refresh tokens"
        f"{' kept' if args.no_rotation else ' rotate, and a reused one revokes the grant'})\n"
        f"  revoke     {server.base_url}/revoke\n"
        f"  client id  {server.client_id}\n"
        f"  secret     {server.client_secret}\n"
        "Grants live in memory: restarting forgets them (Junction then reports needs_reauth).\n"
        "Register it with Junction (POST /token-management/clients, service role):\n"
        f"{registration}\n"
        + (f"(written to {args.write_client})\n" if args.write_client is not None else "")
        + "Ctrl-C stops it.",
        flush=True,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0

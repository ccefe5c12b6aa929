"""Token management: fresh-token reads against bare endpoints, and a 50-way expired-token read."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy import text

from app.core.routing import DirectRoute
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from bench.harness import BenchContext, run_raw_asgi
from bench.raw_asgi import store_answer

TENANT = "bench-tokens"
PROVIDER = "local_oauth"
REDIRECT_URI = "http://localhost/token-management/auth/callback"
_ONE_ROW = text(
    "SELECT id, token_type, expires_at, scope, access_token_enc FROM oauth_connections"
    " WHERE tenant_id = :tenant_id AND provider = :provider AND branch_id = :branch_id"
)
_TOKEN_BODY = (
    b'{"provider":"local_oauth","branch_id":"fresh","access_token":"at-0123456789abcdef0123456789",'
    b'"token_type":"Bearer","expires_at":"2026-11-25T18:00:00Z","scope":"read write"}'
)


def register_bare_routes(app: FastAPI) -> None:
    @app.get("/bench/tokens/bare", include_in_schema=False)
    async def bare() -> Response:
        # A token-shaped answer with no auth, no database and no decryption.
        return Response(content=_TOKEN_BODY, media_type="application/json")

    async def bare_direct(request: Request) -> Response:
        return Response(content=_TOKEN_BODY, media_type="application/json")

    # The same answer on the service's own lean route class: what auth, cache and decryption
    # cost alone.
    app.router.add_api_route(
        "/bench/tokens/bare_direct",
        bare_direct,
        methods=["GET"],
        include_in_schema=False,
        route_class_override=DirectRoute,
    )

    @app.get("/bench/tokens/one_row/{branch_id}", include_in_schema=False)
    async def bare_one_row(branch_id: str, request: Request) -> Response:
        # The same single-row lookup the token read does, with no auth and no decryption.
        async with app_state(request.app).engine.connect() as conn:
            row = (
                await conn.execute(
                    _ONE_ROW, {"tenant_id": TENANT, "provider": PROVIDER, "branch_id": branch_id}
                )
            ).first()
        body = b"{}" if row is None else f'{{"id":"{row.id}","type":"{row.token_type}"}}'.encode()
        return Response(content=body, media_type="application/json")


async def _connect(
    http: httpx.AsyncClient, ctx: BenchContext, headers: dict[str, str], client_pk: str, branch: str
) -> None:
    login = await http.get(
        f"{ctx.base_url}/token-management/oauth/login/{client_pk}",
        params={"branch_id": branch},
        headers=headers,
    )
    login.raise_for_status()
    at_provider = await http.get(login.json()["authorization_url"])
    callback = urlsplit(at_provider.headers["location"])
    done = await http.get(f"{ctx.base_url}{callback.path}?{callback.query}")
    assert done.status_code == 200, done.text


async def _register(
    http: httpx.AsyncClient, ctx: BenchContext, headers: dict[str, str], server: LocalOAuthServer
) -> str:
    body: dict[str, Any] = {
        "provider": PROVIDER,
        "name": "bench provider",
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "redirect_uri": REDIRECT_URI,
        "scopes": ["read", "write"],
        "refresh_margin_s": 60,
        **server.provider_urls(),
    }
    response = await http.post(
        f"{ctx.base_url}/token-management/clients", json=body, headers=headers
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def _expired_read_wall_time(
    http: httpx.AsyncClient,
    ctx: BenchContext,
    headers: dict[str, str],
    server: LocalOAuthServer,
    client_pk: str,
    branch: str,
) -> tuple[float, int, int]:
    server.token_lifetime_s = 0
    await _connect(http, ctx, headers, client_pk, branch)
    server.token_lifetime_s = 3600
    calls_before = server.refresh_calls
    url = f"{ctx.base_url}/token-management/tokens/{branch}"
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(http.get(url, params={"provider": PROVIDER}, headers=headers) for _ in range(50))
    )
    elapsed = time.perf_counter() - started
    ok = sum(1 for r in responses if r.status_code == 200)
    return elapsed, ok, server.refresh_calls - calls_before


async def _against_raw_asgi(
    ctx: BenchContext, http: httpx.AsyncClient, read_path: str, headers: dict[str, str]
) -> None:
    """The fresh read against a raw ASGI app answering the same bytes: the body and every header
    the service sent (bench/raw_asgi.py)."""
    answer = await http.get(ctx.base_url + read_path, headers=headers)
    answer.raise_for_status()
    async with run_raw_asgi() as raw_url:
        async with httpx.AsyncClient(base_url=raw_url) as raw:
            await store_answer(raw, "token", answer)
        read, floor, ratio = await ctx.paired_across(
            (ctx.base_url, read_path, headers), (raw_url, "/token")
        )
    ctx.report("raw ASGI app, same token bytes (req/s)", floor.requests_per_s, "req/s")
    ctx.report("fresh token read, same run (req/s)", read.requests_per_s, "req/s")
    ctx.report(
        "fresh token read / raw ASGI app (median of 5 paired rounds)",
        ratio,
        "ratio",
        target=">= 0.5",
    )


async def run(ctx: BenchContext) -> None:
    server = LocalOAuthServer().start()
    try:
        headers = {"Authorization": f"Bearer {ctx.token([TENANT], roles=['service'])}"}
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            client_pk = await _register(http, ctx, headers, server)
            await _connect(http, ctx, headers, client_pk, "fresh")

            read_path = f"/token-management/tokens/fresh?provider={PROVIDER}"
            # A fresh token answers from the read cache: compared with the bare endpoint that
            # returns a token-shaped body (no auth, no cache, no decryption) ...
            read, bare, ratio = await ctx.paired(read_path, headers, "/bench/tokens/bare")
            ctx.report("bare token-shaped endpoint (req/s)", bare.requests_per_s, "req/s")
            ctx.report(
                "GET /token-management/tokens/{branch_id} fresh (req/s)",
                read.requests_per_s,
                "req/s",
            )
            ctx.report("fresh read p50 / p99", read.p50_ms, f"ms / {read.p99_ms:.2f} ms")
            ctx.report(
                "fresh token read / bare endpoint (median of 5 paired rounds)",
                ratio,
                "ratio",
                target=">= 0.7",
            )
            _, bare_direct, ratio_direct = await ctx.paired(
                read_path, headers, "/bench/tokens/bare_direct", rounds=3
            )
            ctx.report(
                "bare endpoint on a DirectRoute (req/s)", bare_direct.requests_per_s, "req/s"
            )
            ctx.report(
                "fresh token read / bare DirectRoute endpoint (median of 3)", ratio_direct, "ratio"
            )
            await _against_raw_asgi(ctx, http, read_path, headers)
            # ... and, with the read cache off, with a bare endpoint doing the same one-row lookup.
            async with ctx.server({"TOKEN_READ_CACHE_TTL_S": "0"}) as uncached_url:
                uncached, one_row, ratio = await ctx.paired(
                    read_path, headers, "/bench/tokens/one_row/fresh", base_url=uncached_url
                )
            ctx.report("bare one-row lookup (req/s)", one_row.requests_per_s, "req/s")
            ctx.report("fresh read, read cache off (req/s)", uncached.requests_per_s, "req/s")
            ctx.report(
                "fresh read, cache off / bare one-row lookup (median of 5 paired rounds)",
                ratio,
                "ratio",
            )
            errors = read.errors + bare.errors + uncached.errors + one_row.errors
            if errors:
                ctx.report("errors during the fresh read runs", errors)

            # Each run: a new connection whose token expired at login, then 50 readers at once;
            # 49 of them wait for the one refresh instead of making their own.
            walls: list[float] = []
            for attempt in range(3):
                wall, ok, calls = await _expired_read_wall_time(
                    http, ctx, headers, server, client_pk, f"expired-{attempt}"
                )
                walls.append(wall)
                if ok != 50 or calls != 1:
                    print(f"  attempt {attempt}: {ok}/50 answered 200, {calls} provider calls")
            ctx.report(
                "50 concurrent reads of an expired token, wall time (median of 3)",
                statistics.median(walls) * 1000,
                "ms",
            )
            ctx.report("  provider refresh calls per 50 reads (last run)", calls)
    finally:
        server.stop()

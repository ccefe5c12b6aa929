"""The floor every ratio is read against: a bare FastAPI endpoint in the same process."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

from bench.harness import BenchContext

_BODY = b'{"status":"ok"}'


def register_bare_routes(app: FastAPI) -> None:
    @app.get("/bench/baseline/bare", include_in_schema=False)
    async def bare() -> Response:
        return Response(content=_BODY, media_type="application/json")


async def run(ctx: BenchContext) -> None:
    bare = await ctx.load("GET", "/bench/baseline/bare", duration_s=4)
    ctx.report("bare endpoint requests/s", bare.requests_per_s, "req/s")
    health = await ctx.load("GET", "/livez", duration_s=4)
    ctx.report("GET /livez requests/s", health.requests_per_s, "req/s")
    ctx.report("GET /livez / bare", health.requests_per_s / bare.requests_per_s, "ratio")

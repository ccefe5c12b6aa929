"""The floor every ratio is read against: a bare FastAPI endpoint in the same process."""

from __future__ import annotations

import statistics

from fastapi import FastAPI
from fastapi.responses import Response

from bench.harness import BenchContext

_BODY = b'{"status":"ok"}'
_ROUNDS = 3


def register_bare_routes(app: FastAPI) -> None:
    @app.get("/bench/baseline/bare", include_in_schema=False)
    async def bare() -> Response:
        return Response(content=_BODY, media_type="application/json")


async def run(ctx: BenchContext) -> None:
    # Paired rounds: the first load after start-up runs slow, so a single pair would credit
    # whichever endpoint ran second.
    bare_rps: list[float] = []
    livez_rps: list[float] = []
    for _ in range(_ROUNDS):
        bare_rps.append(
            (await ctx.load("GET", "/bench/baseline/bare", duration_s=3)).requests_per_s
        )
        livez_rps.append((await ctx.load("GET", "/livez", duration_s=3)).requests_per_s)
    bare, livez = statistics.median(bare_rps), statistics.median(livez_rps)
    ctx.report("bare endpoint requests/s (median of 3)", bare, "req/s")
    ctx.report("GET /livez requests/s (median of 3)", livez, "req/s")
    ctx.report("GET /livez / bare (request-id middleware, metrics, routing)", livez / bare, "ratio")

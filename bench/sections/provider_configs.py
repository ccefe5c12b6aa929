"""Provider configurations: cached and uncached GET against bare endpoints and a raw ASGI app,
the conditional GET's 304, POST latency, and a change's way to a stream on another replica."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy import text

from app.core.routing import DirectRoute
from app.state import app_state
from bench.harness import BenchContext, run_raw_asgi
from bench.raw_asgi import store_answer

TENANT = "bench-provider-configs"
ROUNDS = 5
STREAM_WRITES = 200
_BODY: dict[str, bytes] = {"document": b"{}"}
_AUTOCOMMIT: dict[str, Any] = {}
_ONE_ROW = text(
    "SELECT id, provider_name, priority, enabled, config_data, api_key_mask, version, updated_at"
    " FROM provider_configs WHERE tenant_id = :tenant_id AND deleted = false LIMIT 1"
)


def register_bare_routes(app: FastAPI) -> None:
    @app.put("/bench/provider_configs/document", include_in_schema=False)
    async def store_document(request: Request) -> Response:
        _BODY["document"] = await request.body()
        return Response(status_code=204)

    @app.get("/bench/provider_configs/document", include_in_schema=False)
    async def bare_document() -> Response:
        # The same bytes the cached route answers, with no auth and no cache lookup.
        return Response(content=_BODY["document"], media_type="application/json")

    async def bare_document_direct(request: Request) -> Response:
        return Response(content=_BODY["document"], media_type="application/json")

    # The same bytes on the service's own lean route class: what auth and the cache cost alone.
    app.router.add_api_route(
        "/bench/provider_configs/document_direct",
        bare_document_direct,
        methods=["GET"],
        include_in_schema=False,
        route_class_override=DirectRoute,
    )

    @app.get("/bench/provider_configs/one_row", include_in_schema=False)
    async def bare_one_row(request: Request) -> Response:
        async with app_state(request.app).engine.connect() as conn:
            row = (await conn.execute(_ONE_ROW, {"tenant_id": TENANT})).first()
        return _row_response(row)

    @app.get("/bench/provider_configs/one_row_autocommit", include_in_schema=False)
    async def bare_one_row_autocommit(request: Request) -> Response:
        # The same select without BEGIN/ROLLBACK, as the service's own uncached read does it.
        engine = _AUTOCOMMIT.get("engine")
        if engine is None:
            engine = app_state(request.app).engine.execution_options(isolation_level="AUTOCOMMIT")
            _AUTOCOMMIT["engine"] = engine
        async with engine.connect() as conn:
            row = (await conn.execute(_ONE_ROW, {"tenant_id": TENANT})).first()
        return _row_response(row)


def _row_response(row: Any) -> Response:
    body = b"{}" if row is None else f'{{"id":"{row.id}","version":{row.version}}}'.encode()
    return Response(content=body, media_type="application/json")


def _seed_document() -> dict[str, Any]:
    def providers(kind: str, count: int) -> list[dict[str, Any]]:
        return [
            {
                "provider_name": f"{kind}-{i}",
                "priority": ("primary", "secondary", "fallback")[i % 3],
                "config_data": {"region": "eu-west-1", "timeout_ms": 1500, "retries": 2},
                "api_key": f"{kind}-key-0123456789-{i:04d}",
            }
            for i in range(count)
        ]

    return {
        "map_providers": providers("map", 2),
        "weather_providers": providers("weather", 2),
        "sms_providers": providers("sms", 1),
        "payment_providers": providers("payment", 1),
        "change_reason": "benchmark seed",
    }


async def _post_latency(
    base_url: str, headers: dict[str, str], duration_s: float
) -> tuple[float, float, int]:
    """Sequential POSTs, each changing one provider (so each writes a version)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            body = {"map_providers": [{"provider_name": "map-0", "config_data": {"n": n}}]}
            started = time.perf_counter()
            response = await client.post(f"/config/{TENANT}", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += response.status_code != 200
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return statistics.median(latencies), p99, errors


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def _stream_latency(
    writer_url: str, reader_url: str, writer: dict[str, str], reader: dict[str, str], count: int
) -> tuple[list[float], list[float], int]:
    """Sequential writes through one replica, each one event on a stream held on the other:
    for each, ms from the write's response (and from its request) to the event's arrival."""
    arrivals: asyncio.Queue[float] = asyncio.Queue()
    from_response: list[float] = []
    from_request: list[float] = []
    lost = 0
    async with (
        httpx.AsyncClient(base_url=reader_url, headers=reader, timeout=None) as streams,
        streams.stream("GET", f"/config/{TENANT}/stream") as stream,
        httpx.AsyncClient(base_url=writer_url, headers=writer, timeout=10) as writes,
    ):

        async def listen() -> None:
            async for line in stream.aiter_lines():
                if line.startswith("id:"):
                    arrivals.put_nowait(time.perf_counter())

        listener = asyncio.create_task(listen())
        try:
            for n in range(count):
                body = {"map_providers": [{"provider_name": "map-1", "config_data": {"s": n}}]}
                requested = time.perf_counter()
                response = await writes.post(f"/config/{TENANT}", json=body)
                answered = time.perf_counter()
                response.raise_for_status()
                try:
                    arrived = await asyncio.wait_for(arrivals.get(), 10)
                except TimeoutError:
                    lost += 1
                    continue
                from_response.append((arrived - answered) * 1000)
                from_request.append((arrived - requested) * 1000)
        finally:
            listener.cancel()
    return from_response, from_request, lost


async def _against_raw_asgi(
    ctx: BenchContext, headers: dict[str, str], document: httpx.Response
) -> None:
    """The cached GET and its 304 against a raw ASGI app answering the same bytes: the body and
    every header the service sent (bench/raw_asgi.py)."""
    etag = document.headers["etag"]
    conditional = {**headers, "If-None-Match": etag}
    async with (
        run_raw_asgi() as raw_url,
        httpx.AsyncClient(base_url=raw_url) as raw,
        httpx.AsyncClient(base_url=ctx.base_url) as ours,
    ):
        await store_answer(raw, "document", await ours.get(f"/config/{TENANT}", headers=headers))
        answer_304 = await ours.get(f"/config/{TENANT}", headers=conditional)
        assert answer_304.status_code == 304, answer_304.text
        await store_answer(raw, "document/not-modified", answer_304)
        cached, floor, ratio = await ctx.paired_across(
            (ctx.base_url, f"/config/{TENANT}", headers), (raw_url, "/document"), rounds=ROUNDS
        )
        ctx.report("raw ASGI app, same JSON bytes (req/s)", floor.requests_per_s, "req/s")
        ctx.report(
            "cached GET /config/{tenant_id}, same run (req/s)", cached.requests_per_s, "req/s"
        )
        ctx.report(
            f"cached GET / raw ASGI app (median of {ROUNDS} paired rounds)",
            ratio,
            "ratio",
            target=">= 0.5",
        )
        not_modified, floor_304, ratio_304 = await ctx.paired_across(
            (ctx.base_url, f"/config/{TENANT}", conditional),
            (raw_url, "/document/not-modified"),
            rounds=ROUNDS,
        )
        ctx.report("raw ASGI app answering 304 (req/s)", floor_304.requests_per_s, "req/s")
        ctx.report("conditional GET answering 304 (req/s)", not_modified.requests_per_s, "req/s")
        ctx.report(
            "conditional GET 304 p50 / p99",
            not_modified.p50_ms,
            f"ms / {not_modified.p99_ms:.2f} ms",
        )
        ctx.report(
            f"conditional GET 304 / raw ASGI 304 (median of {ROUNDS} paired rounds)",
            ratio_304,
            "ratio",
            target=">= 0.5",
        )
        errors = cached.errors + floor.errors + not_modified.errors + floor_304.errors
        if errors:
            ctx.report("errors during the raw ASGI comparisons", errors)


async def run(ctx: BenchContext) -> None:
    headers = {"Authorization": f"Bearer {ctx.token([TENANT])}"}
    # Writing a configuration needs the service role; the measured reads need none.
    writer = {"Authorization": f"Bearer {ctx.token([TENANT], roles=['service'])}"}
    async with httpx.AsyncClient(base_url=ctx.base_url, headers=headers, timeout=10) as client:
        seeded = await client.post(f"/config/{TENANT}", json=_seed_document(), headers=writer)
        seeded.raise_for_status()
        document = await client.get(f"/config/{TENANT}")
        await client.put("/bench/provider_configs/document", content=document.content)
    stored = sum(len(v) for k, v in document.json().items() if k.endswith("_providers"))
    ctx.report("document: providers / bytes", stored, f"/ {len(document.content)} bytes")

    cached, bare, ratio = await ctx.paired(
        f"/config/{TENANT}", headers, "/bench/provider_configs/document", rounds=ROUNDS
    )
    ctx.report("bare endpoint, same JSON bytes (req/s)", bare.requests_per_s, "req/s")
    ctx.report("cached GET /config/{tenant_id} (req/s)", cached.requests_per_s, "req/s")
    ctx.report("cached GET p50 / p99", cached.p50_ms, f"ms / {cached.p99_ms:.2f} ms")
    ctx.report(
        f"cached GET / bare endpoint (median of {ROUNDS} paired rounds)",
        ratio,
        "ratio",
        target=">= 0.8",
    )
    _, bare_direct, ratio_direct = await ctx.paired(
        f"/config/{TENANT}", headers, "/bench/provider_configs/document_direct", rounds=3
    )
    ctx.report(
        "bare endpoint on a DirectRoute, same bytes (req/s)", bare_direct.requests_per_s, "req/s"
    )
    ctx.report("cached GET / bare DirectRoute endpoint (median of 3)", ratio_direct, "ratio")
    if cached.errors or bare.errors:
        ctx.report("errors during cached GET / bare runs", cached.errors + bare.errors)
    await _against_raw_asgi(ctx, headers, document)

    async with ctx.server({"PROVIDER_CONFIG_CACHE_ENABLED": "false"}) as uncached_url:
        uncached, one_row, ratio = await ctx.paired(
            f"/config/{TENANT}",
            headers,
            "/bench/provider_configs/one_row",
            base_url=uncached_url,
            rounds=ROUNDS,
        )
        # The service reads without BEGIN/ROLLBACK; the same select read that way, for fairness.
        _, one_row_autocommit, ratio_autocommit = await ctx.paired(
            f"/config/{TENANT}",
            headers,
            "/bench/provider_configs/one_row_autocommit",
            base_url=uncached_url,
            rounds=3,
        )
    ctx.report("bare endpoint, one raw single-row select (req/s)", one_row.requests_per_s, "req/s")
    ctx.report("uncached GET /config/{tenant_id} (req/s)", uncached.requests_per_s, "req/s")
    ctx.report("uncached GET p50 / p99", uncached.p50_ms, f"ms / {uncached.p99_ms:.2f} ms")
    ctx.report(
        f"uncached GET / bare single-row select (median of {ROUNDS} paired rounds)",
        ratio,
        "ratio",
        target=">= 0.9",
    )
    ctx.report(
        "bare single-row select in autocommit, like the service (req/s)",
        one_row_autocommit.requests_per_s,
        "req/s",
    )
    ctx.report(
        f"uncached GET / bare autocommit select (median of {ROUNDS} paired rounds)",
        ratio_autocommit,
        "ratio",
    )
    errors = uncached.errors + one_row.errors + one_row_autocommit.errors
    if errors:
        ctx.report("errors during uncached GET / select runs", errors)

    p50, p99, errors = await _post_latency(ctx.base_url, writer, duration_s=5)
    ctx.report("POST /config/{tenant_id} changing one provider, p50", p50, "ms", target="<= 5")
    ctx.report("POST /config/{tenant_id} changing one provider, p99", p99, "ms")
    if errors:
        ctx.report("errors during POST run", errors)

    # The change stream: written through this replica, held on another (same database, Redis).
    async with ctx.server({}) as other_url:
        from_response, from_request, lost = await _stream_latency(
            ctx.base_url, other_url, writer, headers, count=STREAM_WRITES
        )
    if from_response:
        p50, p99 = _percentiles(from_response)
        ctx.report(
            f"stream on the other replica: write response -> event, p50 ({STREAM_WRITES} writes)",
            p50,
            "ms (negative: the event came first)",
        )
        ctx.report("stream on the other replica: write response -> event, p99", p99, "ms")
        p50, p99 = _percentiles(from_request)
        ctx.report("stream on the other replica: write request -> event, p50", p50, "ms")
        ctx.report("stream on the other replica: write request -> event, p99", p99, "ms")
    if lost:
        ctx.report("writes whose event did not arrive within 10 s", lost)

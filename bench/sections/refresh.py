"""Refresh cost: the monitoring loop's refreshes per second against the local provider, over raw
refresh grants per second to the same provider at the same concurrency (measured in this run,
just before and just after the loop, their mean), the same two as CPU time of this process per
refresh and per grant, and the database round trips the loop's refreshes make.

What is counted: every round trip Junction's engine makes to PostgreSQL while the loop refreshes
every connection once (`RoundTripCounter`: statements, first preparations, and the BEGIN, COMMIT
and ROLLBACK the driver sends), divided by the refreshes: the refresh itself, the loop's leasing
passes and lease renewals, everything. Redis commands (the read cache's invalidation) are not
counted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import migrations
from bench.harness import BenchContext
from bench.sections.monitoring import RemoteProvider, _provider_process, overdue_loop_run
from tests.oauth_fixtures import REDIRECT_URI

DATABASE = "junction_bench_refresh"
CONNECTIONS = 200
CONCURRENCY = (4, 16)


# --- raw refresh grants ---------------------------------------------------------------------


async def _grant(client: httpx.AsyncClient, provider: RemoteProvider) -> str:
    """A refresh token from a login straight at the provider (authorization code with PKCE)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    authorized = await client.get(
        f"{provider.base_url}/authorize",
        params={
            "client_id": provider.client_id,
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    code = parse_qs(urlsplit(authorized.headers["location"]).query)["code"][0]
    exchanged = await client.post(
        provider.provider_urls()["token_url"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": provider.client_id,
            "client_secret": provider.client_secret,
        },
    )
    return str(exchanged.json()["refresh_token"])


async def _raw_refresh_rate(provider: RemoteProvider, concurrency: int) -> tuple[float, float]:
    """Refresh grants per second, `concurrency` at a time, each worker rotating its own grant's
    refresh token as Junction does: CONNECTIONS calls in all; and this process's CPU seconds per
    call."""
    per_worker = CONNECTIONS // concurrency
    async with httpx.AsyncClient() as client:
        tokens = [await _grant(client, provider) for _ in range(concurrency)]

        async def worker(refresh_token: str) -> None:
            for _ in range(per_worker):
                answer = await client.post(
                    provider.provider_urls()["token_url"],
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": refresh_token,
                        "client_id": provider.client_id,
                        "client_secret": provider.client_secret,
                    },
                )
                assert answer.status_code == 200, answer.text
                refresh_token = answer.json()["refresh_token"]

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(token) for token in tokens))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    calls = per_worker * concurrency
    return calls / elapsed, cpu / calls


# --- the loop -------------------------------------------------------------------------------


class RoundTripCounter:
    """The round trips an engine makes to PostgreSQL, by their first word, counted where they
    are sent: each statement (SQLAlchemy's `before_cursor_execute`); a PREPARE for each
    statement prepared on its connection for the first time (asyncpg's `prepare`: a Parse round
    trip before it runs); and each BEGIN, COMMIT and ROLLBACK asyncpg actually sends (its query
    logger). SQLAlchemy's own begin and commit events are not counted: they fire on an
    autocommit connection too, where nothing is sent."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        # The query loggers stay on the connections they were added to: what they hear after
        # `counting` ends (the loop's shutdown) is not counted.
        self._counting = False

    @contextmanager
    def counting(self, engine: AsyncEngine) -> Iterator[None]:
        """Count what `engine` sends while the block runs. Connections checked out already (none
        is, between the bench's steps) are counted from their next checkout."""
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", self._statement)
        event.listen(sync_engine, "checkout", self._checkout)
        counts = self.counts
        prepare = asyncpg.Connection.prepare

        async def counted_prepare(conn: Any, *args: Any, **kwargs: Any) -> Any:
            counts["PREPARE"] += 1
            return await prepare(conn, *args, **kwargs)

        asyncpg.Connection.prepare = counted_prepare
        self._counting = True
        try:
            yield
        finally:
            self._counting = False
            event.remove(sync_engine, "before_cursor_execute", self._statement)
            event.remove(sync_engine, "checkout", self._checkout)
            asyncpg.Connection.prepare = prepare

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.counts[_first_word(statement)] += 1

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # The same callback each time: asyncpg keeps a set of them, so attaching is idempotent.
        dbapi_connection.driver_connection.add_query_logger(self._sent)

    def _sent(self, record: Any) -> None:
        word = _first_word(record.query)
        if self._counting and word in ("BEGIN", "COMMIT", "ROLLBACK"):
            self.counts[word] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _first_word(statement: str) -> str:
    return statement.lstrip().split(None, 1)[0].rstrip(";").upper()


async def run(ctx: BenchContext) -> None:
    url = ctx.database(DATABASE)
    await ctx.admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    await ctx.admin(f'CREATE DATABASE "{DATABASE}"')
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        async with _provider_process() as provider:
            await _raw_refresh_rate(provider, 4)  # warm the provider process
            for concurrency in CONCURRENCY:
                # Raw grants just before and just after the loop, their mean the reference: on
                # a machine whose load drifts, the loop is not compared with another moment's.
                before, cpu_before = await _raw_refresh_rate(provider, concurrency)
                counter = RoundTripCounter()
                rate, loop_cpu = await overdue_loop_run(
                    ctx,
                    url,
                    provider,
                    connections=CONNECTIONS,
                    concurrency=concurrency,
                    per_provider=concurrency,
                    observe=counter.counting,
                )
                after, cpu_after = await _raw_refresh_rate(provider, concurrency)
                raw, raw_cpu = (before + after) / 2, (cpu_before + cpu_after) / 2
                print(f"    raw before / after the loop: {before:.0f} / {after:.0f} call/s")
                ctx.report(f"raw refresh grants/s, {concurrency} at a time", raw, "call/s")
                ctx.report(f"loop refreshes/s, {concurrency} at a time", rate, "refresh/s")
                ctx.report(
                    f"loop / raw refreshes, {concurrency} at a time", rate / raw, "ratio", ">= 0.5"
                )
                # Where the loop is CPU-bound in its process, the rate ratio follows this one:
                # the target needs a refresh to cost at most two raw grants of CPU.
                print(
                    f"    CPU per raw grant {raw_cpu * 1000:.2f} ms, per loop refresh "
                    f"{loop_cpu * 1000:.2f} ms"
                )
                ctx.report(
                    f"loop CPU per refresh / raw grant's, {concurrency} at a time",
                    loop_cpu / raw_cpu,
                    "ratio",
                )
                per_refresh = counter.total / CONNECTIONS
                ctx.report(
                    f"database round trips per refresh, {concurrency} at a time",
                    per_refresh,
                    "trip",
                    "<= 3",
                )
                counts = counter.counts.most_common()
                breakdown = ", ".join(f"{word} {n / CONNECTIONS:.2f}" for word, n in counts)
                print(f"    per refresh: {breakdown}")
    finally:
        await ctx.admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')

"""Group commit: concurrent single-event requests to one replica share transactions, each is
answered after the commit that stored it, repeats stay exact, and shutdown drains the queue."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.config import Settings
from app.core.db import utcnow
from app.state import app_state
from app.usage import service
from app.usage.batcher import UsageBatcher
from app.usage.schemas import UsageEventIn
from tests.conftest import TokenFactory, bearer, build_settings, postgres_only, running_app
from tests.usage.conftest import Summary, event_body


def _wide_window(settings: Settings) -> Settings:
    # A window long enough that requests sent together surely meet in it.
    return settings.model_copy(update={"usage_group_commit_wait_ms": 200.0})


async def test_concurrent_single_events_share_commits_and_add_up_exactly(
    settings: Settings, make_token: TokenFactory, summary: Summary
) -> None:
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    async with running_app(_wide_window(settings)) as (app, client):
        responses = await asyncio.gather(
            *(
                client.post(
                    "/usage/openai",
                    json=event_body(prompt_tokens=i, completion_tokens=1),
                    headers=headers,
                )
                for i in range(1, 21)
            )
        )
        figures = app_state(app).usage_batcher.figures  # type: ignore[union-attr]
    assert [r.status_code for r in responses] == [201] * 20
    assert len({r.json()["id"] for r in responses}) == 20
    assert figures.events == 20 and figures.transactions < 20
    assert (await summary())["current_period"]["used"] == {"tokens": 210 + 20, "calls": 20}


async def test_a_request_id_repeated_within_one_commit_is_stored_once(
    settings: Settings, make_token: TokenFactory, summary: Summary
) -> None:
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    bodies = [event_body(prompt_tokens=1, completion_tokens=0) for _ in range(7)]
    bodies += [event_body(request_id="same", prompt_tokens=1, completion_tokens=0)] * 3
    async with running_app(_wide_window(settings)) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/usage/openai", json=body, headers=headers) for body in bodies)
        )
    assert sorted(r.status_code for r in responses) == [200] * 2 + [201] * 8
    assert len({r.json()["id"] for r in responses[7:]}) == 1
    assert (await summary())["current_period"]["used"] == {"tokens": 8, "calls": 8}


async def test_a_bad_event_is_refused_alone(
    settings: Settings, make_token: TokenFactory, summary: Summary
) -> None:
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    bad = event_body(prompt_tokens=1, prompt_tokens_details={"cached_tokens": 2})
    bodies = [event_body(prompt_tokens=1, completion_tokens=0) for _ in range(4)] + [bad]
    async with running_app(_wide_window(settings)) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/usage/openai", json=body, headers=headers) for body in bodies)
        )
    assert [r.status_code for r in responses] == [201] * 4 + [422]
    assert (await summary())["current_period"]["used"]["calls"] == 4


async def test_stopping_writes_every_queued_event_first(app: Any, summary: Summary) -> None:
    state = app_state(app)
    batcher = UsageBatcher(state.sessionmaker, state.settings, wait_s=60, max_events=1000)
    batcher.start()
    rows = [
        service.event_row(
            state.usage_prices, UsageEventIn(**event_body(request_id=None)), now=utcnow()
        )
        for _ in range(5)
    ]
    pending = [asyncio.create_task(batcher.record(row)) for row in rows]
    await asyncio.sleep(0)  # queued, inside a window that would last a minute
    await batcher.stop()
    assert all(task.done() and not task.cancelled() for task in pending)
    assert len({task.result().id for task in pending}) == 5
    assert (await summary())["current_period"]["used"]["calls"] == 5


async def test_group_commit_off_commits_each_request_itself(
    database_url: str, make_token: TokenFactory, summary: Summary
) -> None:
    settings = build_settings(database_url, usage_group_commit_max_events=0)
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    async with running_app(settings) as (app, client):
        assert app_state(app).usage_batcher is None
        response = await client.post("/usage/openai", json=event_body(), headers=headers)
    assert response.status_code == 201
    assert (await summary())["current_period"]["used"]["calls"] == 1


@postgres_only
async def test_a_failed_group_commit_retries_each_event_on_its_own(
    settings: Settings, make_token: TokenFactory, summary: Summary
) -> None:
    """A batch whose transaction fails (here: its counter upsert waits on a table lock past the
    statement timeout) is not the requests' failure: each event is written again in a
    transaction of its own, and counted once."""
    custom = _wide_window(settings).model_copy(update={"db_statement_timeout_ms": 500})
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    holder = create_async_engine(settings.database_url, poolclass=NullPool)
    try:
        async with running_app(custom) as (app, client), holder.connect() as locker:
            batcher = app_state(app).usage_batcher
            assert batcher is not None
            lock = await locker.begin()
            await locker.execute(text("LOCK TABLE usage_counters IN EXCLUSIVE MODE"))
            sending = asyncio.gather(
                *(
                    client.post("/usage/openai", json=event_body(prompt_tokens=i), headers=headers)
                    for i in range(1, 6)
                )
            )
            deadline = time.monotonic() + 20
            while batcher.figures.retried_alone < 5:
                assert time.monotonic() < deadline, "the locked batch never failed"
                await asyncio.sleep(0.01)
            await lock.rollback()  # the retries, one transaction each, get the table
            responses = await sending
            figures = batcher.figures
    finally:
        await holder.dispose()
    assert [r.status_code for r in responses] == [201] * 5, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 5
    assert (figures.retried_alone, figures.events, figures.transactions) == (5, 5, 5)
    used = (await summary())["current_period"]["used"]
    assert used == {"tokens": 1 + 2 + 3 + 4 + 5 + 5 * 500, "calls": 5}

"""Several dispatchers over one outbox (replicas): each delivery is POSTed once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx

from app.core.db import utcnow
from app.monitoring.webhook_delivery import (
    DELIVERY_LEASE_S,
    WebhookDispatcher,
    lease_due_deliveries,
)
from app.state import app_state
from tests.monitoring.conftest import Receiver
from tests.monitoring.webhook_helpers import deliveries, raise_event, register

EVENTS = 120  # more than one pass's batch (50), so each dispatcher has work to claim


async def test_two_dispatchers_post_each_delivery_once(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    for _ in range(EVENTS):
        await raise_event(app)
    state = app_state(app)
    replicas = [
        WebhookDispatcher(state.settings, state.sessionmaker, state.keyring, state.http, owner=name)
        for name in ("replica-a", "replica-b")
    ]
    for _ in range(10):
        passes = await asyncio.gather(*(replica.run_once() for replica in replicas))
        if not any(passes):
            break
    sent = Counter(request.webhook_id for request in receiver.requests)
    assert len(sent) == EVENTS and set(sent.values()) == {1}
    rows = await deliveries(app)
    assert {row.id for row in rows} == set(sent)
    assert all(row.delivered_at is not None and row.attempts == 1 for row in rows)


async def test_a_lease_left_by_a_killed_replica_is_taken_over_once_it_expires(
    app: Any, client: httpx.AsyncClient, make_token: Any, receiver: Receiver
) -> None:
    await register(client, make_token, receiver.url)
    await raise_event(app)
    state = app_state(app)
    now = utcnow()
    async with state.sessionmaker() as session, session.begin():
        assert len(await lease_due_deliveries(session, owner="killed", now=now, limit=10)) == 1
    survivor = WebhookDispatcher(
        state.settings, state.sessionmaker, state.keyring, state.http, owner="survivor"
    )
    assert await survivor.run_once(now=now + timedelta(seconds=1)) == {}  # still leased
    assert await survivor.run_once(now=now + timedelta(seconds=DELIVERY_LEASE_S)) == {
        "delivered": 1
    }
    [row] = await deliveries(app)
    assert row.delivered_at is not None and row.lease_owner is None and row.attempts == 1
    assert len(receiver.requests) == 1

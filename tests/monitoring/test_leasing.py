"""Row leasing: only due, unleased connections are claimed; expired leases are taken over."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from app.core.db import utcnow
from app.monitoring import repository
from app.monitoring.repository import LeasedConnection
from app.state import app_state
from tests.conftest import postgres_only
from tests.monitoring.factories import get_connection, make_client, make_connection


async def lease(app: Any, owner: str, limit: int = 100) -> list[LeasedConnection]:
    now = utcnow()
    async with app_state(app).sessionmaker() as session, session.begin():
        return await repository.lease_due_connections(
            session, owner=owner, now=now, lease_until=now + timedelta(seconds=60), limit=limit
        )


async def test_only_due_connections_are_leased(app: Any) -> None:
    client_id = await make_client(app)
    due = await make_connection(app, client_id, branch_id="due", refresh_due_in_s=-5)
    await make_connection(app, client_id, branch_id="later", refresh_due_in_s=600)
    await make_connection(app, client_id, branch_id="never", refresh_due_in_s=None)
    leased = await lease(app, "instance-a")
    assert leased == [LeasedConnection(id=due, provider="google_search_console")]
    stored = await get_connection(app, due)
    assert stored.lease_owner == "instance-a"
    assert stored.lease_expires_at is not None and stored.lease_expires_at > utcnow()


async def test_lease_takes_the_longest_overdue_first(app: Any) -> None:
    client_id = await make_client(app)
    await make_connection(app, client_id, branch_id="recent", refresh_due_in_s=-1)
    oldest = await make_connection(app, client_id, branch_id="oldest", refresh_due_in_s=-600)
    leased = await lease(app, "instance-a", limit=1)
    assert [c.id for c in leased] == [oldest]


async def test_a_leased_connection_is_not_leased_again(app: Any) -> None:
    client_id = await make_client(app)
    await make_connection(app, client_id, refresh_due_in_s=-5)
    assert len(await lease(app, "instance-a")) == 1
    assert await lease(app, "instance-b") == []


async def test_an_expired_lease_left_by_a_killed_instance_is_taken_over(app: Any) -> None:
    client_id = await make_client(app)
    orphan = await make_connection(
        app,
        client_id,
        refresh_due_in_s=-300,
        lease_owner="killed-instance",
        lease_expires_at=utcnow() - timedelta(seconds=1),
    )
    leased = await lease(app, "survivor")
    assert [c.id for c in leased] == [orphan]
    assert (await get_connection(app, orphan)).lease_owner == "survivor"


async def test_release_clears_only_the_owners_lease(app: Any) -> None:
    client_id = await make_client(app)
    connection_id = await make_connection(app, client_id, refresh_due_in_s=-5)
    await lease(app, "instance-a")
    async with app_state(app).sessionmaker() as session, session.begin():
        assert await repository.release_leases(session, [connection_id], "instance-b") == 0
    assert (await get_connection(app, connection_id)).lease_owner == "instance-a"
    async with app_state(app).sessionmaker() as session, session.begin():
        assert await repository.release_leases(session, [connection_id], "instance-a") == 1
    assert (await get_connection(app, connection_id)).lease_owner is None


@postgres_only
async def test_concurrent_leases_claim_disjoint_connections(app: Any) -> None:
    client_id = await make_client(app)
    for i in range(40):
        await make_connection(app, client_id, branch_id=f"b{i}", refresh_due_in_s=-60 - i)
    results = await asyncio.gather(*(lease(app, f"instance-{n}", limit=15) for n in range(4)))
    claimed = [c.id for batch in results for c in batch]
    assert len(claimed) == len(set(claimed)) == 40

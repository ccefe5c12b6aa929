"""GET /config/{tenant_id}/stream: Server-Sent Events of each committed change.

Streams are held on served replicas (uvicorn, real HTTP): on PostgreSQL + Redis two of them, the
writes going through one and the stream held on the other; on SQLite one replica with the
in-process cache. The finite form (`follow=false`) runs in-process too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import IS_POSTGRES, REDIS_URL, TokenFactory, bearer
from tests.provider_configs.conftest import TENANT, find, post_config, provider
from tests.replica_server import ReplicaServer

STREAMS_PER_TENANT = 2
# A guard against a hang, not a measure: events arrive in milliseconds.
WAIT_S = 30.0
SECRET = "sk-live-streamsecret-7777"


@dataclass
class Replicas:
    writer: ReplicaServer
    reader: ReplicaServer  # the writer itself on SQLite


@pytest.fixture(scope="module")
def replicas(database_url: str) -> Iterator[Replicas]:
    options = {
        "provider_config_stream_heartbeat_s": "0.2",
        "provider_config_streams_per_tenant": str(STREAMS_PER_TENANT),
        # Longer than any test: an event that arrives came through the wake-up, not the poll.
        "provider_config_stream_poll_s": "3600",
    }
    redis_url = REDIS_URL if IS_POSTGRES else None
    writer = ReplicaServer(database_url, redis_url, **options)
    try:
        reader = ReplicaServer(database_url, redis_url, **options) if IS_POSTGRES else writer
        try:
            yield Replicas(writer, reader)
        finally:
            if reader is not writer:
                reader.stop()
    finally:
        writer.stop()


@dataclass
class Event:
    event: str | None = None
    id: str | None = None
    data: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads("\n".join(self.data))
        return parsed


@dataclass
class Stream:
    response: httpx.Response
    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)

    async def next_event(self) -> Event:
        """The next event (heartbeat comments are kept in `comments`)."""

        async def read() -> Event:
            current = Event()
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments.append(line)
                elif line == "":
                    if current.data or current.event:
                        return current
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "data":
                        current.data.append(value)
                    elif name in ("event", "id"):
                        setattr(current, name, value)
            raise AssertionError("the stream ended")

        return await asyncio.wait_for(read(), WAIT_S)

    async def next_comment(self) -> str:
        async def read() -> str:
            async for line in self.lines:
                if line.startswith(":"):
                    return line
            raise AssertionError("the stream ended")

        return await asyncio.wait_for(read(), WAIT_S)


@asynccontextmanager
async def open_stream(
    server: ReplicaServer, headers: dict[str, str], tenant_id: str = TENANT, **params: Any
) -> AsyncIterator[Stream]:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=WAIT_S) as client,
        client.stream("GET", f"/config/{tenant_id}/stream", headers=headers, params=params) as r,
    ):
        yield Stream(r, r.aiter_lines())


@pytest.fixture
async def writer_client(replicas: Replicas) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=replicas.writer.base_url, timeout=WAIT_S) as client:
        yield client


async def test_a_change_through_one_replica_reaches_a_stream_on_another(
    replicas: Replicas, writer_client: httpx.AsyncClient, editor: dict
) -> None:
    async with open_stream(replicas.reader, editor) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        written = await post_config(
            writer_client, editor, map=[provider("google", config_data={"zoom": 3})]
        )
        assert written.status_code == 200, written.text
        event = await stream.next_event()
    assert event.event == "change"
    assert event.id is not None and int(event.id) > 0
    change = event.json()
    assert change["config_id"] == find(written.json(), "map", "google")["id"]
    assert (change["version"], change["change_type"]) == (1, "created")
    assert change["snapshot"]["config_data"] == {"zoom": 3}
    assert {"field": "config_data.zoom", "change": "added", "after": 3, "secret": False} in (
        change["diff"]["changes"]
    )


async def test_one_event_per_change_in_commit_order(
    replicas: Replicas, writer_client: httpx.AsyncClient, editor: dict
) -> None:
    async with open_stream(replicas.reader, editor) as stream:
        await post_config(writer_client, editor, map=[provider("google"), provider("mapbox")])
        await post_config(writer_client, editor, map=[provider("google", enabled=False)])
        events = [await stream.next_event() for _ in range(3)]
    ids = [int(str(e.id)) for e in events]
    assert ids == sorted(ids)
    assert [(e.json()["snapshot"]["provider_name"], e.json()["version"]) for e in events] == [
        ("google", 1),
        ("mapbox", 1),
        ("google", 2),
    ]
    assert events[2].json()["change_type"] == "disabled"


async def test_a_reconnect_with_last_event_id_loses_nothing(
    replicas: Replicas, writer_client: httpx.AsyncClient, editor: dict
) -> None:
    async with open_stream(replicas.reader, editor) as stream:
        await post_config(writer_client, editor, map=[provider("google", config_data={"v": 1})])
        first = await stream.next_event()
    # Disconnected: two changes commit meanwhile.
    await post_config(writer_client, editor, map=[provider("google", config_data={"v": 2})])
    await post_config(writer_client, editor, map=[provider("google", config_data={"v": 3})])
    resumed = {**editor, "Last-Event-ID": str(first.id)}
    async with open_stream(replicas.reader, resumed) as stream:
        missed = [await stream.next_event() for _ in range(2)]
        await post_config(writer_client, editor, map=[provider("google", config_data={"v": 4})])
        live = await stream.next_event()
    assert [e.json()["version"] for e in [*missed, live]] == [2, 3, 4]


async def test_the_stream_sends_heartbeat_comments(replicas: Replicas, editor: dict) -> None:
    async with open_stream(replicas.reader, editor) as stream:
        comment = await stream.next_comment()
    assert comment.startswith(":")


async def test_streams_per_tenant_are_bounded(
    replicas: Replicas, editor: dict, make_token: TokenFactory
) -> None:
    async with open_stream(replicas.reader, editor) as one, open_stream(replicas.reader, editor):
        assert one.response.status_code == 200
        async with httpx.AsyncClient(base_url=replicas.reader.base_url, timeout=WAIT_S) as client:
            refused = await client.get(f"/config/{TENANT}/stream", headers=editor)
            assert refused.status_code == 429
            assert refused.json()["error"] == "too_many_streams"
            # Another tenant has slots of its own.
            other = bearer(make_token(["tenant-b"]))
            async with open_stream(replicas.reader, other, "tenant-b") as theirs:
                assert theirs.response.status_code == 200
    # Closed streams give their slots back (once the server sees the disconnect).
    for _ in range(int(WAIT_S / 0.05)):
        async with (
            open_stream(replicas.reader, editor) as a,
            open_stream(replicas.reader, editor) as b,
        ):
            if (a.response.status_code, b.response.status_code) == (200, 200):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the closed streams' slots were never given back")


async def test_a_stream_shows_no_secret_and_no_other_tenant(
    replicas: Replicas, writer_client: httpx.AsyncClient, editor: dict, make_token: TokenFactory
) -> None:
    other = bearer(make_token(["tenant-b"], roles=["service"]))
    async with open_stream(replicas.reader, editor) as stream:
        await post_config(writer_client, other, "tenant-b", map=[provider("theirs")])
        await post_config(writer_client, editor, payment=[provider("stripe", api_key=SECRET)])
        await post_config(writer_client, editor, payment=[provider("stripe", api_key=SECRET + "x")])
        events = [await stream.next_event() for _ in range(2)]
    assert [e.json()["snapshot"]["provider_name"] for e in events] == ["stripe", "stripe"]
    assert all(SECRET not in "".join(e.data) for e in events)
    assert {"field": "api_key", "change": "changed", "secret": True} in events[1].json()["diff"][
        "changes"
    ]


async def test_another_tenants_stream_is_refused(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    other = bearer(make_token(["tenant-b"]))
    assert (await client.get(f"/config/{TENANT}/stream", headers=other)).status_code == 403
    assert (await client.get(f"/config/{TENANT}/stream")).status_code == 401


async def test_without_follow_the_stream_ends_after_the_committed_changes(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    response = await client.get(f"/config/{TENANT}/stream?after=0&follow=false", headers=editor)
    assert response.status_code == 200
    blocks = [b for b in response.text.replace("\r\n", "\n").split("\n\n") if "data:" in b]
    versions = [
        json.loads(line.removeprefix("data:").strip())["version"]
        for block in blocks
        for line in block.splitlines()
        if line.startswith("data:")
    ]
    assert versions == [1, 2]


async def test_a_bad_position_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    for headers, query in (
        ({"Last-Event-ID": "not-a-position"}, ""),
        ({}, "?after=-1"),
        ({}, "?follow=maybe"),
    ):
        response = await client.get(
            f"/config/{TENANT}/stream{query}", headers={**editor, **headers}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "validation_error"

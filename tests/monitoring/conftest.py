"""Webhook receivers for the monitoring tests: real HTTP endpoints on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from app.devtools.http_server import BackgroundHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """Records every POST and answers the queued statuses (then 200)."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


def serve_receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            # Header names as sent, lower-cased (HTTP header names are case-insensitive).
            headers = {name.lower(): value for name, value in self.headers.items()}
            state.requests.append(Received(headers, body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with BackgroundHTTPServer(Handler) as server:
        state.url = f"{server.base_url}/hooks/junction"
        yield state


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve_receiver()


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    yield from serve_receiver()

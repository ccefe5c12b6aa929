"""No route hops to a worker thread: FastAPI runs a plain `def` endpoint or dependency in its
thread pool, a needless hop (and a wait for a free thread under load) on every request."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from app.core.config import Settings
from app.main import create_app


def _calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _runs_on_the_loop(call: Any) -> bool:
    """A coroutine or async generator function, or an instance whose `__call__` is one."""
    candidates = [call] if inspect.isroutine(call) else [call, type(call).__call__]
    return any(inspect.iscoroutinefunction(c) or inspect.isasyncgenfunction(c) for c in candidates)


def test_every_endpoint_and_dependency_runs_on_the_event_loop(settings: Settings) -> None:
    app = create_app(settings)
    routes = [
        context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]
    assert len(routes) > 30
    in_a_thread = sorted(
        {
            f"{route.path} {sorted(route.methods)}: {getattr(call, '__qualname__', call)}"
            for route in routes
            for call in _calls(route.dependant)
            if not _runs_on_the_loop(call)
        }
    )
    assert in_a_thread == []

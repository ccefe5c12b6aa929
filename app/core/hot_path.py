"""The front door of the hottest routes: their `DirectRoute`s served without the middleware stack.

A warm `GET /config/{tenant_id}` or fresh-token read is a dict lookup after authentication; what
it cost beyond that was the stack around it: FastAPI's and Starlette's middlewares (the error
middleware, the telemetry check that reads the environment, the body limit, the exception
middleware, the exit stack), Starlette's routing, and Junction's own pure-ASGI middlewares. For
a request for one of the routes registered here (`HotRoutes.add`), the app's `__call__` hands
the request to `HotRoutes.serve` instead, which does for that request what the stack would have
done, and no more (for a GET; a hot write gets its body limits too, as the end of this says):
- the request context (request id in and out, security headers, per-route metrics, the access
  log): the same `RequestContext` `RequestContextMiddleware` uses;
- the head-size limit (`RequestLimitsMiddleware.head_too_large`): a request over it goes the
  normal way, which answers 431;
- the route's own endpoint with the scope routing would have given it (`endpoint`, `route`,
  `path_params`), so authentication, revocation, the permission table's rule and the tenant
  check run as they do behind the stack;
- an error the endpoint raises is answered by the app's own exception handlers, looked up as the
  exception middleware looks them up; an unexpected one as the error middleware answers it (the
  500 handler, then raised for the server to log).
A hot write (a POST `DirectRoute`: usage events) is served the same way, with the request
limits in front of its endpoint: the same `RequestLimitsMiddleware` the stack runs, so its 413,
400 and nested-JSON 422 come from one owner.

Requests that a middleware could answer differently never come here: the app installs no hot
routes when rate limiting or CORS is configured (those middlewares must see every request), and
no hot writes in maintenance mode (its middleware refuses writes).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.request_context import RequestContext

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Any]


# A path whose one parameter is its last segment, a plain string: matched without the regex.
_LAST_SEGMENT = re.compile(r"[^{}]*/\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class _HotRoute:
    route: APIRoute
    endpoint: Endpoint
    prefix: str
    method: str
    # The parameter's name when the path is `prefix` + one `{name}` segment of any text.
    last_segment: str | None

    def params(self, path: str) -> dict[str, Any] | None:
        """The path parameters of `path` for this route; None: not this route's path."""
        if not path.startswith(self.prefix):
            return None
        if self.last_segment is not None:
            value = path[len(self.prefix) :]
            # What Starlette's `[^/]+` for a `str` parameter would accept.
            return {self.last_segment: value} if value and "/" not in value else None
        if not self.route.param_convertors:
            return {} if path == self.prefix else None
        found = self.route.path_regex.match(path)
        if found is None:
            return None
        convertors = self.route.param_convertors
        return {k: convertors[k].convert(v) for k, v in found.groupdict().items()}


class PreparedResponse(Response):
    """An answer whose header list was built with it (or once, ahead): no header dict to turn
    into one on every request, no media type or length worked out again."""

    def __init__(self, status_code: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...]):
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = list(headers)


class HotRoutes:
    """The routes served past the stack, and what serving them needs of the app."""

    def __init__(
        self,
        head_too_large: Callable[[Scope], bool],
        body_limits: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> None:
        self._routes: list[_HotRoute] = []
        self._head_too_large = head_too_large
        self._handlers: dict[Any, Handler] = {}
        # A write's body goes through the request limits before its endpoint reads it.
        self._limited_endpoint = body_limits(self._run_endpoint) if body_limits else None

    def add(self, route: APIRoute) -> None:
        """Serve `route` (a `DirectRoute` whose endpoint takes the request: a GET, or a POST
        when body limits were given) past the stack."""
        methods = sorted(route.methods or ())
        if len(methods) != 1:
            raise ValueError("a hot route answers one method")
        method = methods[0]
        if method != "GET" and self._limited_endpoint is None:
            raise ValueError("a hot write needs the request limits in front of it")
        # The literal start of its path: most requests are told apart by it without a regex.
        prefix = route.path.split("{", 1)[0]
        whole = _LAST_SEGMENT.fullmatch(route.path)
        last_segment = None
        if whole is not None and type(route.param_convertors[whole[1]]) is StringConvertor:
            last_segment = whole[1]
        self._routes.append(_HotRoute(route, route.endpoint, prefix, method, last_segment))

    def use_exception_handlers(self, handlers: dict[Any, Handler]) -> None:
        self._handlers = handlers

    def match(self, scope: Scope) -> tuple[_HotRoute, dict[str, Any]] | None:
        """The hot route a request is for, with its path parameters; None: not a hot read (or
        one the normal way must answer)."""
        method = scope["method"]
        path: str = scope["path"]
        for hot in self._routes:
            if hot.method != method:
                continue
            params = hot.params(path)
            if params is None:
                continue
            if self._head_too_large(scope):
                return None
            return hot, params
        return None

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls is Exception:
                break
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler
        return None

    async def serve(
        self,
        app: Any,
        hot: _HotRoute,
        params: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope["app"] = app
        scope["endpoint"] = hot.endpoint
        scope["route"] = hot.route
        scope["path_params"] = params
        context = RequestContext(scope, send)
        try:
            if hot.method == "GET":
                await self._run_endpoint(scope, receive, context.send)
            else:
                assert self._limited_endpoint is not None
                await self._limited_endpoint(scope, receive, context.send)
        finally:
            context.finish(scope)

    async def _run_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint `serve` put in the scope, its errors answered by the app's handlers."""
        request = Request(scope, receive)
        try:
            response = await scope["endpoint"](request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                await self._answer(self._handlers.get(Exception), request, exc, scope, send)
                raise
            await self._answer(handler, request, exc, scope, send)
            return
        if type(response) is PreparedResponse:
            # Its two messages, without a Response call: its header list was built with it.
            start = {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
            await send(start)
            await send({"type": "http.response.body", "body": response.body})
            return
        await response(scope, receive, send)

    @staticmethod
    async def _answer(
        handler: Handler | None, request: Request, exc: Exception, scope: Scope, send: Send
    ) -> None:
        if handler is None:
            response: Response = Response("Internal Server Error", status_code=500)
        else:
            answered = handler(request, exc)
            response = await answered if inspect.isawaitable(answered) else answered
        await response(scope, request.receive, send)

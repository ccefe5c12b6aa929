"""The ASGI application: `create_app()` wires settings, clients, routers and error handlers."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from app import __version__
from app.admin import config_pages as admin_config_pages
from app.admin import router as admin_router
from app.admin.rendering import STATIC as ADMIN_STATIC
from app.auth import router as auth_router
from app.auth.service import RevocationList
from app.core import maintenance, openapi, permissions
from app.core.auth import TokenVerifier
from app.core.config import Settings
from app.core.cors import CorsMiddleware
from app.core.crypto import Keyring
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import install_error_handlers
from app.core.hot_path import HotRoutes
from app.core.http import build_http_client
from app.core.limits import RequestLimitsMiddleware, head_too_large
from app.core.logging import configure_logging, secrets
from app.core.metrics import worker_figures
from app.core.migrations import head_revision
from app.core.rate_limit import RateLimiter, RateLimitMiddleware
from app.core.redis_cache import build_cache
from app.core.request_context import RequestContextMiddleware
from app.core.routing import DirectRoute
from app.health import router as health_router
from app.monitoring import lifecycle as monitoring_lifecycle
from app.monitoring import router as monitoring_router
from app.operations.keys import UnknownKeyCheck
from app.platforms import router as platforms_router
from app.provider_configs import lifecycle as provider_configs_lifecycle
from app.provider_configs import router as provider_configs_router
from app.provider_configs import stream_route as provider_configs_stream
from app.state import AppState, keep_state
from app.tokens import router as tokens_router
from app.tokens.context import TokenContext
from app.usage import folding as usage_folding
from app.usage import router as usage_router
from app.usage.batcher import group_commit
from app.usage.prices import PriceTable
from app.workspaces import router as workspaces_router

logger = logging.getLogger("junction")


def _register_secrets(settings: Settings) -> None:
    # Known secret values are masked wherever they would appear in a log line.
    secrets.add(settings.auth_jwt_secret)
    secrets.add(settings.jwt_secret)
    secrets.add(settings.metrics_bearer_token)
    for entry in settings.encryption_keys.split(","):
        secrets.add(entry.partition(":")[2] or entry)


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[AppState]:
    """Build the clients, start each domain in order, and stop them in reverse on the way out.

    The order matters where one part uses another: the domains subscribe to the cache's bus
    before it opens, and monitoring registers its listener with the token context.
    """
    engine = create_engine(settings)
    maintenance.refuse_writes_on(engine, settings)
    sessionmaker = create_sessionmaker(engine)
    cache = build_cache(
        settings.redis_url,
        socket_timeout_s=settings.cache_socket_timeout_s,
        breaker_failures=settings.cache_breaker_failures,
        breaker_reset_s=settings.cache_breaker_reset_s,
    )
    keyring = Keyring(settings.encryption_keys)
    http = build_http_client(settings)
    token_verifier = TokenVerifier(settings)
    schema_head = head_revision()
    revocations = RevocationList(sessionmaker, cache, settings=settings)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        stack.push_async_callback(http.aclose)
        stack.push_async_callback(cache.close)
        await stack.enter_async_context(worker_figures(engine, cache))
        await revocations.start()
        stack.push_async_callback(revocations.stop)
        provider_configs = await stack.enter_async_context(
            provider_configs_lifecycle.lifespan(settings, engine, sessionmaker, cache, keyring)
        )
        # Built here, not at import: the provider overrides are validated at start-up.
        tokens = TokenContext.build(settings, engine, sessionmaker, cache, keyring, http)
        # Settings plus defaults, built once rather than per event.
        usage_prices = PriceTable.from_settings(settings)
        await stack.enter_async_context(
            usage_folding.folding_loop(sessionmaker, settings.usage_rollup_fold_interval_s)
        )
        # Entered after the engine's disposal was pushed: at shutdown it drains first.
        usage_batcher = await stack.enter_async_context(group_commit(sessionmaker, settings))
        monitoring = await stack.enter_async_context(
            monitoring_lifecycle.lifespan(settings, sessionmaker, keyring, http, tokens)
        )
        key_check = UnknownKeyCheck(engine, keyring, settings.key_check_interval_s)
        stack.push_async_callback(key_check.stop)
        rate_limiter = RateLimiter(settings) if settings.rate_limit else None
        if rate_limiter is not None:
            stack.push_async_callback(rate_limiter.close)
        state = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            cache=cache,
            keyring=keyring,
            http=http,
            token_verifier=token_verifier,
            revocations=revocations,
            schema_head=schema_head,
            provider_configs=provider_configs,
            tokens=tokens,
            usage_prices=usage_prices,
            monitoring=monitoring,
            key_check=key_check,
            rate_limiter=rate_limiter,
            usage_batcher=usage_batcher,
        )
        # Subscriptions are registered by now; open the cache bus once for all of them.
        await cache.start()
        logger.info(
            "junction %s started (database=%s, cache=%s)",
            __version__,
            engine.dialect.name,
            cache.backend,
        )
        yield state
        logger.info("junction stopping")


class JunctionApp(FastAPI):
    """The service's app: a request for one of its hot routes is served past the middleware stack
    (app/core/hot_path.py), everything else the usual way."""

    hot_routes: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot_routes = self.hot_routes
        if hot_routes is not None and scope["type"] == "http":
            found = hot_routes.match(scope)
            if found is not None:
                await hot_routes.serve(self, *found, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _serve_hot_routes(app: JunctionApp, settings: Settings) -> None:
    """Serve the app's `DirectRoute`s past the stack, unless a middleware that must see every
    request is configured (rate limiting, CORS); in maintenance mode only the reads."""
    if settings.rate_limit or settings.cors_origins or app.root_path:
        return
    limit = settings.request_max_header_bytes
    options = RequestLimitsMiddleware.options(settings)
    hot_routes = HotRoutes(
        partial(head_too_large, max_header_bytes=limit),
        lambda endpoint: RequestLimitsMiddleware(endpoint, **options),
    )
    methods = {"GET"} if settings.read_only else {"GET", "POST"}
    for route in app.router.routes:
        if isinstance(route, DirectRoute) and route.methods and route.methods <= methods:
            hot_routes.add(route)
    hot_routes.use_exception_handlers(app.exception_handlers)
    app.hot_routes = hot_routes


@contextmanager
def _startup_objects_frozen() -> Iterator[None]:
    """What start-up built (the app, its routes, models, clients: ~190k objects) lives as long as
    the service, so it is kept out of the garbage collector's full passes (`gc.freeze`). Each
    such pass walked all of it: ~100 ms with the whole service stopped, every few seconds
    under load. At shutdown the objects go back to the collector, so an app stopped in a
    process that lives on (the tests) can still be collected."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.json_logs)
    _register_secrets(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with started(settings) as state:
            keep_state(app, state)
            with _startup_objects_frozen():
                yield

    app = JunctionApp(
        title="Junction",
        version=__version__,
        summary="OAuth connections, provider configurations and AI usage for SaaS products.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.serves_docs else None,
        docs_url="/docs" if settings.serves_docs else None,
        redoc_url="/redoc" if settings.serves_docs else None,
        generate_unique_id_function=openapi.operation_id,
    )
    install_error_handlers(app)
    if settings.read_only:
        # Innermost: a refused write is still counted, rate-limited and given a request id.
        app.add_middleware(
            maintenance.MaintenanceMiddleware, retry_after_s=settings.maintenance_retry_after_s
        )
    if settings.rate_limit:
        # Inside the request context (its 429s are counted and carry the request id).
        app.add_middleware(RateLimitMiddleware)
    # Inside the request-context middleware, so its refusals carry a request id and are counted.
    app.add_middleware(RequestLimitsMiddleware, **RequestLimitsMiddleware.options(settings))
    if settings.cors_origins:
        # Outside the limits and the rate limiter, so a page can read their 413, 431 and 429
        # (a preflight is answered here, before either: it carries no body and no token);
        # inside the request context, so preflights get a request id and are counted.
        app.add_middleware(CorsMiddleware, settings=settings)
    app.add_middleware(RequestContextMiddleware)
    # Starlette tries routes in order, at a cost per route tried: the hot reads (provider
    # configurations, fresh tokens) and the hot write (usage events) come first, on the app
    # itself, then their domains' routers.
    # No two routes share a path and method, so the order is free.
    tokens_router.add_hot_routes(app)
    provider_configs_router.add_hot_routes(app)
    usage_router.add_hot_routes(app)
    for router in (
        provider_configs_router.router,
        provider_configs_stream.router,
        tokens_router.router,
        health_router.router,
        auth_router.router,
        workspaces_router.router,
        platforms_router.router,
        monitoring_router.router,
        usage_router.router,
        admin_router.router,
        admin_config_pages.router,
    ):
        app.include_router(router)
    # The console's scripts and styles (its own and the vendored htmx and uPlot): no CDN.
    app.mount("/admin/static", StaticFiles(directory=ADMIN_STATIC), name="admin-static")
    # Every route has its entry in the one permission table, which is then what get_principal
    # enforces and what the OpenAPI document shows.
    permissions.install(app)
    openapi.install(app)
    _docs_routes_last(app)
    _serve_hot_routes(app, settings)
    return app


def _docs_routes_last(app: FastAPI) -> None:
    """FastAPI puts its documentation routes first; move them behind the service's own."""
    docs_paths = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    routes = app.router.routes
    docs: list[BaseRoute] = [r for r in routes if isinstance(r, Route) and r.path in docs_paths]
    routes[:] = [r for r in routes if r not in docs] + docs


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app from the environment on first access, not at import,
    # so tests and scripts that import this module choose their own settings.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)

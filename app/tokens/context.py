"""`TokenContext`: the clients the tokens domain works with outside a request, built at start-up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.cache import Cache
from app.core.config import Settings
from app.core.crypto import Keyring
from app.core.db import single_statement_reader, utcnow
from app.tokens.models import OAuthClient, OAuthConnection
from app.tokens.providers import ProviderRegistry, ProviderSpec
from app.tokens.read_cache import TokenReadCache


@dataclass
class StatusChange:
    """A connection's stored status changed (`active`, `refresh_failed`, `needs_reauth`)."""

    tenant_id: str
    provider: str
    branch_id: str
    connection_id: str
    previous_status: str
    new_status: str
    reason: str | None
    occurred_at: datetime


# What a `ConnectionNotice` says happened (the monitoring events of the same names).
NOTICE_CONNECTED = "connected"  # a login stored a grant; reason "new" or "reauthorized"
NOTICE_DISCONNECTED = "disconnected"  # the connection was deleted (disconnect)
NOTICE_REFRESH_TOKEN_EXPIRING = "refresh_token_expiring"  # its refresh token lapses soon


@dataclass
class ConnectionNotice:
    """Something that happened to a connection other than a status change."""

    kind: str
    tenant_id: str
    provider: str
    branch_id: str
    connection_id: str
    reason: str | None
    occurred_at: datetime


@dataclass
class ClientStatusChange:
    """A client's status changed: `misconfigured` (its provider refused the app itself) or back
    to `active` (edited, or a login proved its credentials good)."""

    tenant_id: str
    provider: str
    client_id: str
    previous_status: str
    new_status: str
    reason: str | None
    occurred_at: datetime


TokenChange = StatusChange | ConnectionNotice | ClientStatusChange

# Records a change in the session that stores it, without I/O of its own (it adds ORM objects,
# which the commit writes): the refresh path runs it between the provider's answer and the commit.
StatusRecorder = Callable[[AsyncSession, TokenChange], None]
# Prepares a recorder for one tenant's change (may query: it runs before the provider is called).
StatusListener = Callable[[AsyncSession, str], Awaitable[StatusRecorder]]
# Hears, after a commit, when a connection is next due for refresh (the monitoring loop's wake).
ScheduleListener = Callable[[datetime], None]


@dataclass(frozen=True)
class PreparedStatusChange:
    """The listeners' recorders for one tenant, ready before the change is known."""

    recorders: tuple[StatusRecorder, ...]

    def record(
        self,
        session: AsyncSession,
        connection: OAuthConnection,
        previous_status: str,
        reason: str | None,
    ) -> None:
        """Hand a connection's status change to every recorder (nothing when the status stayed
        the same); no I/O."""
        if previous_status == connection.status:
            return
        self.emit(
            session,
            StatusChange(
                tenant_id=connection.tenant_id,
                provider=connection.provider,
                branch_id=connection.branch_id,
                connection_id=connection.id,
                previous_status=previous_status,
                new_status=connection.status,
                reason=reason,
                occurred_at=utcnow(),
            ),
        )

    def notify(
        self, session: AsyncSession, kind: str, connection: OAuthConnection, reason: str | None
    ) -> None:
        """Hand a `ConnectionNotice` of `kind` about `connection` to every recorder; no I/O."""
        self.emit(
            session,
            ConnectionNotice(
                kind=kind,
                tenant_id=connection.tenant_id,
                provider=connection.provider,
                branch_id=connection.branch_id,
                connection_id=connection.id,
                reason=reason,
                occurred_at=utcnow(),
            ),
        )

    def emit(self, session: AsyncSession, change: TokenChange) -> None:
        for recorder in self.recorders:
            recorder(session, change)


class KeyedLocks:
    """In-process asyncio locks per connection, dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, timeout_s: float) -> AsyncIterator[bool]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        acquired = False
        try:
            try:
                await asyncio.wait_for(lock.acquire(), timeout=max(timeout_s, 0.001))
                acquired = True
            except TimeoutError:
                acquired = False
            yield acquired
        finally:
            if acquired:
                lock.release()
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(eq=False)
class TokenContext:
    """Everything the tokens domain needs outside a request (the monitoring loop uses it too).

    Built once, by `build` in the app's lifespan. Other domains hear of status changes through
    `on_status_change`, the one hook they register with.
    """

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    cache: Cache
    keyring: Keyring
    http: httpx.AsyncClient
    registry: ProviderRegistry
    read_cache: TokenReadCache = field(repr=False)
    local_locks: KeyedLocks = field(default_factory=KeyedLocks, init=False, repr=False)
    # The engine for statements each atomic on its own (`single_statement_reader`), made once:
    # making it registers event listeners, ~12% of a refresh's CPU when done per refresh.
    single_statement_engine: AsyncEngine = field(init=False, repr=False)
    _status_listeners: list[StatusListener] = field(default_factory=list, init=False, repr=False)
    _schedule_listeners: list[ScheduleListener] = field(
        default_factory=list, init=False, repr=False
    )

    @classmethod
    def build(
        cls,
        settings: Settings,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        cache: Cache,
        keyring: Keyring,
        http: httpx.AsyncClient,
    ) -> TokenContext:
        """A context over the app's clients (the registry validates the overrides here, at
        start-up); its read cache hears invalidations once the shared cache is started."""
        read_cache = TokenReadCache(cache, ttl_s=settings.token_read_cache_ttl_s)
        read_cache.subscribe()
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            cache=cache,
            keyring=keyring,
            http=http,
            registry=ProviderRegistry(settings),
            read_cache=read_cache,
        )

    def __post_init__(self) -> None:
        self.single_statement_engine = single_statement_reader(self.engine)

    def on_status_change(self, listener: StatusListener) -> Callable[[], None]:
        """Have `listener` record, inside the transaction that stores it, every `TokenChange`:
        a connection's stored status (`active`, `refresh_failed`, `needs_reauth`; a login that
        recovers one included), a `ConnectionNotice` (connected, disconnected, refresh token
        expiring) and a client's status. Returns the function that unregisters it."""
        self._status_listeners.append(listener)
        return lambda: self._status_listeners.remove(listener)

    async def prepare_status_change(
        self, session: AsyncSession, tenant_id: str
    ) -> PreparedStatusChange:
        """Ask every listener (the monitoring events) for its recorder, ahead of a change of one
        of `tenant_id`'s connections or clients: whatever they must look up is looked up here."""
        recorders = [await listener(session, tenant_id) for listener in self._status_listeners]
        return PreparedStatusChange(tuple(recorders))

    def on_refresh_scheduled(self, listener: ScheduleListener) -> Callable[[], None]:
        """Have `listener` told, after each commit of this process that set a connection's
        `refresh_due_at` (a login, a refresh), that due time. Returns the function that
        unregisters it."""
        self._schedule_listeners.append(listener)
        return lambda: self._schedule_listeners.remove(listener)

    def refresh_scheduled(self, due_at: datetime | None) -> None:
        """After a commit that set a connection's refresh_due_at (None: never due)."""
        if due_at is not None:
            for listener in self._schedule_listeners:
                listener(due_at)

    async def invalidate(
        self, connection_ids: Iterable[str] = (), *, tenant_id: str | None = None
    ) -> None:
        """After a commit that changed what a token read answers."""
        await self.read_cache.invalidate(connection_ids, tenant_id=tenant_id)

    def spec_for(self, client: OAuthClient) -> ProviderSpec:
        return self.registry.resolve(client.provider, client.provider_settings)

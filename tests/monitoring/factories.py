"""Rows for the monitoring and platforms tests: clients, connections, events, written directly."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.core.db import new_id, utcnow
from app.monitoring.models import MonitoringEvent
from app.state import app_state
from app.tokens.models import OAuthClient, OAuthConnection


async def make_client(
    app: Any,
    *,
    tenant_id: str = "tenant-a",
    provider: str = "google_search_console",
    provider_settings: dict[str, Any] | None = None,
) -> str:
    client = OAuthClient(
        id=new_id(),
        tenant_id=tenant_id,
        provider=provider,
        name=f"{provider} app",
        client_id="app-id",
        client_secret_enc="not-a-real-ciphertext",
        redirect_uri="http://127.0.0.1/callback",
        scopes=[],
        return_urls=[],
        provider_settings=provider_settings or {},
    )
    async with app_state(app).sessionmaker() as session, session.begin():
        session.add(client)
    return client.id


async def make_connection(
    app: Any,
    client_id: str,
    *,
    branch_id: str = "branch-1",
    status: str = "active",
    expires_in_s: float | None = 3600,
    refresh_due_in_s: float | None = 3000,
    last_error: str | None = None,
    lease_owner: str | None = None,
    lease_expires_at: datetime | None = None,
) -> str:
    now = utcnow()
    async with app_state(app).sessionmaker() as session, session.begin():
        client = await session.get(OAuthClient, client_id)
        assert client is not None
        connection = OAuthConnection(
            id=new_id(),
            tenant_id=client.tenant_id,
            client_id=client.id,
            provider=client.provider,
            branch_id=branch_id,
            access_token_enc="not-a-real-ciphertext",
            refresh_token_enc="not-a-real-ciphertext",
            token_type="Bearer",
            expires_at=now + timedelta(seconds=expires_in_s) if expires_in_s is not None else None,
            status=status,
            last_refreshed_at=now,
            last_error=last_error,
            refresh_due_at=(
                now + timedelta(seconds=refresh_due_in_s) if refresh_due_in_s is not None else None
            ),
            lease_owner=lease_owner,
            lease_expires_at=lease_expires_at,
        )
        session.add(connection)
    return connection.id


async def get_connection(app: Any, connection_id: str) -> OAuthConnection:
    async with app_state(app).sessionmaker() as session:
        connection = await session.get(OAuthConnection, connection_id)
        assert connection is not None
        return connection


async def make_event(
    app: Any,
    *,
    tenant_id: str = "tenant-a",
    type: str = "refresh_failed",
    provider: str = "google_search_console",
    branch_id: str = "branch-1",
    occurred_at: datetime | None = None,
    reason: str | None = "http_503",
) -> str:
    event = MonitoringEvent(
        id=new_id(),
        tenant_id=tenant_id,
        type=type,
        provider=provider,
        branch_id=branch_id,
        connection_id=new_id(),
        occurred_at=occurred_at or utcnow(),
        reason=reason,
    )
    async with app_state(app).sessionmaker() as session, session.begin():
        session.add(event)
    return event.id


async def list_event_rows(app: Any) -> list[MonitoringEvent]:
    async with app_state(app).sessionmaker() as session:
        result = await session.scalars(
            select(MonitoringEvent).order_by(MonitoringEvent.occurred_at)
        )
        return list(result)

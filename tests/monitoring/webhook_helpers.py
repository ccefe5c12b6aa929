"""Steps the webhook tests share: register through the API, raise an event through the status
listener's own path, read the outbox rows, drive the dispatcher on a clock of the test's own."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select

from app.core.db import new_id, utcnow
from app.monitoring import service, webhooks
from app.monitoring.models import MonitoringEvent, MonitoringWebhookDelivery
from app.monitoring.webhook_delivery import WebhookDispatcher
from app.state import app_state
from tests.conftest import bearer


def service_token(make_token: Any, tenant: str = "tenant-a") -> dict[str, str]:
    return bearer(make_token(tenants=[tenant], roles=["service"]))


def operator_token(make_token: Any) -> dict[str, str]:
    return bearer(make_token(tenants=["*"], roles=["admin"]))


async def register(
    client: httpx.AsyncClient,
    make_token: Any,
    url: str,
    tenant: str = "tenant-a",
    **fields: Any,
) -> str:
    """The tenant's webhook, registered through the API; its secret (given or generated)."""
    response = await client.put(
        "/monitoring/webhook",
        json={"url": url, **fields},
        headers=service_token(make_token, tenant),
    )
    assert response.status_code == 200, response.text
    return str(fields.get("secret") or response.json()["secret"])


async def register_operator(client: httpx.AsyncClient, make_token: Any, url: str) -> str:
    response = await client.put(
        "/monitoring/operator-webhook", json={"url": url}, headers=operator_token(make_token)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["secret"])


async def raise_event(
    app: Any, tenant: str = "tenant-a", type: str = "needs_reauth", reason: str = "invalid_grant"
) -> str:
    """An event added as every domain adds one (`service.add_event` with its receivers)."""
    event = MonitoringEvent(
        id=new_id(),
        tenant_id=tenant,
        type=type,
        provider="wix",
        branch_id="branch-9",
        connection_id="c" * 32,
        occurred_at=utcnow(),
        reason=reason,
    )
    async with app_state(app).sessionmaker() as session, session.begin():
        service.add_event(session, event, await webhooks.receivers(session, tenant))
    return event.id


async def deliveries(app: Any) -> list[MonitoringWebhookDelivery]:
    async with app_state(app).sessionmaker() as session:
        query = select(MonitoringWebhookDelivery).order_by(MonitoringWebhookDelivery.created_at)
        return list(await session.scalars(query))


def dispatcher(app: Any) -> WebhookDispatcher:
    return app_state(app).monitoring.webhooks


async def drive_until_settled(app: Any, start: datetime, passes: int = 40) -> list[datetime]:
    """Run the dispatcher at `start`, then at each pending row's next attempt, until none is
    pending; the clock of each pass that sent something."""
    sent_at = []
    now = start
    for _ in range(passes):
        if await dispatcher(app).run_once(now=now):
            sent_at.append(now)
        pending = [d.next_attempt_at for d in await deliveries(app) if d.next_attempt_at]
        if not pending:
            return sent_at
        now = min(pending)
    raise AssertionError("deliveries still pending after the passes allowed")

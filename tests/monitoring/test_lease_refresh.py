"""The lease decides who refreshes: the loop under its lease alone, reads around it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.monitoring.lifecycle import build_monitor
from app.state import app_state
from app.tokens import clients
from app.tokens.models import CLIENT_ACTIVE, OAuthClient, OAuthConnection
from tests.conftest import build_settings, postgres_only, recorded_statements, running_app
from tests.oauth_fixtures import connect_branch, register_client
from tests.tokens.helpers import connection_row, read_token


async def _lease_to(app: Any, owner: str, expires_in: timedelta) -> None:
    """The connection leased to `owner` (another instance's loop), due, its token expired."""
    now = utcnow()
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(OAuthConnection).values(
                lease_owner=owner,
                lease_expires_at=now + expires_in,
                expires_at=now - timedelta(seconds=1),
                refresh_due_at=now - timedelta(seconds=1),
                last_refreshed_at=now - timedelta(hours=1),
            )
        )


def _is_write(statement: str) -> bool:
    return statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}


@postgres_only
async def test_a_read_leaves_a_connection_under_another_owners_live_lease_to_it(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # The loop holding the lease takes no other lock: the read must find the lease and wait.
    settings = build_settings(database_url, token_refresh_wait_s=0.5)
    async with running_app(settings) as (app, client):
        token = make_token(roles=["service"])
        await connect_branch(client, token, oauth_server)
        await _lease_to(app, "another-instance", timedelta(minutes=1))
        response = await read_token(client, token)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "refresh_in_progress"
    assert oauth_server.refresh_calls == 0


async def test_a_read_refreshes_a_connection_whose_lease_has_lapsed(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    await _lease_to(app, "killed-instance", timedelta(seconds=-1))
    response = await read_token(client, token)
    assert response.status_code == 200, response.text
    assert oauth_server.refresh_calls == 1


async def test_the_loops_refresh_stores_its_outcome_and_ends_its_lease_in_one_statement(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    now = utcnow()
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(OAuthConnection).values(
                refresh_due_at=now - timedelta(seconds=1),
                last_refreshed_at=now - timedelta(hours=1),
            )
        )
    state = app_state(app)
    monitor = build_monitor(state.settings, state.sessionmaker, state.tokens)
    answered_after: list[int] = []
    answer = oauth_server.token

    with recorded_statements(app, _is_write) as statements:

        def token_endpoint(form: dict[str, str], auth: str | None) -> Any:
            # Runs in the server's thread while the refresh awaits it: what was sent so far.
            answered_after.append(len(statements))
            return answer(form, auth)

        oauth_server.token = token_endpoint  # type: ignore[method-assign]
        tick = await monitor.run_once()
    after_answer = [" ".join(s.split()[:2]).upper() for s in statements[answered_after[0] :]]
    row = await connection_row(app)
    assert (tick.refreshed, oauth_server.refresh_calls) == (1, 1)
    # The outcome and the lease's end in one write: no release of its own follows.
    assert after_answer == ["UPDATE OAUTH_CONNECTIONS"]
    assert row.lease_owner is None and row.lease_expires_at is None


async def test_a_refusal_of_credentials_an_edit_has_replaced_leaves_the_client_active(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    registered = await register_client(client, make_token(roles=["service"]), oauth_server)
    read_before_the_edit = utcnow() - timedelta(minutes=1)
    async with app_state(app).sessionmaker() as session, session.begin():
        marked = await clients.mark_misconfigured(
            session,
            registered["id"],
            "invalid_client",
            utcnow(),
            read_at_version=read_before_the_edit,
        )
        stored = await session.get(OAuthClient, registered["id"])
    assert marked is False
    assert stored is not None and stored.status == CLIENT_ACTIVE

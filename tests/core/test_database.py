"""Database settings applied to every PostgreSQL connection; the unit of work per request."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.core.db import after_commit, create_sessionmaker, unit_of_work
from app.core.logging import request_id_var
from app.state import app_state
from app.workspaces.models import Workspace
from tests.conftest import build_settings, postgres_only, running_app


@postgres_only
async def test_the_statement_timeout_is_set_on_each_postgresql_connection(
    database_url: str,
) -> None:
    settings = build_settings(database_url, db_statement_timeout_ms=1234)
    async with running_app(settings) as (app, _), app_state(app).engine.connect() as conn:
        assert (await conn.execute(text("SHOW statement_timeout"))).scalar() == "1234ms"


@postgres_only
async def test_no_jit_and_no_parallel_workers_on_the_services_connections(
    database_url: str,
) -> None:
    """Both cost more than the service's queries take (app/core/db.py, SHORT_QUERY_SETTINGS)."""
    settings = build_settings(database_url)
    async with running_app(settings) as (app, _), app_state(app).engine.connect() as conn:
        assert (await conn.execute(text("SHOW jit"))).scalar() == "off"
        workers = await conn.execute(text("SHOW max_parallel_workers_per_gather"))
        assert workers.scalar() == "0"


@postgres_only
async def test_the_pool_size_comes_from_settings(database_url: str) -> None:
    settings = build_settings(database_url, db_pool_size=7)
    async with running_app(settings) as (app, _):
        assert app_state(app).engine.pool.size() == 7


async def test_the_unit_of_work_commits_then_runs_after_commit_callbacks(database_url: str) -> None:
    settings = build_settings(database_url)
    ran: list[str] = []
    async with running_app(settings) as (app, _):
        sessionmaker = create_sessionmaker(app_state(app).engine)
        async with unit_of_work(sessionmaker) as session:
            session.add(Workspace(id="uow-tenant"))

            async def callback() -> None:
                async with sessionmaker() as check:
                    ran.append(str(await check.scalar(text("SELECT id FROM workspaces"))))

            after_commit(session, callback)
    assert ran == ["uow-tenant"]


async def test_the_unit_of_work_rolls_back_on_error_and_skips_callbacks(database_url: str) -> None:
    settings = build_settings(database_url)
    ran: list[str] = []
    async with running_app(settings) as (app, _):
        sessionmaker = create_sessionmaker(app_state(app).engine)
        try:
            async with unit_of_work(sessionmaker) as session:
                session.add(Workspace(id="rolled-back"))
                await session.flush()

                async def callback() -> None:
                    ran.append("ran")

                after_commit(session, callback)
                raise RuntimeError("the request failed")
        except RuntimeError:
            pass
        async with sessionmaker() as check:
            assert await check.scalar(text("SELECT count(*) FROM workspaces")) == 0
    assert ran == []


async def test_a_failing_after_commit_step_is_logged_once_with_the_request_id_and_others_run(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = build_settings(database_url)
    ran: list[str] = []
    async with running_app(settings) as (app, _):
        sessionmaker = create_sessionmaker(app_state(app).engine)
        token = request_id_var.set("req-after-commit")
        try:
            async with unit_of_work(sessionmaker) as session:
                session.add(Workspace(id="committed"))

                async def failing() -> None:
                    raise RuntimeError("redis went away")

                async def second() -> None:
                    ran.append("second")

                after_commit(session, failing)
                after_commit(session, second)
        finally:
            request_id_var.reset(token)
        async with sessionmaker() as check:
            assert await check.scalar(text("SELECT id FROM workspaces")) == "committed"
    assert ran == ["second"]
    failures = [r for r in caplog.records if "after-commit step failed" in r.getMessage()]
    assert len(failures) == 1
    assert getattr(failures[0], "request_id", None) == "req-after-commit"

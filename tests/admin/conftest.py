"""Fixtures of the console's browser tests: a uvicorn server of the app, Debian's Chromium driven
by Playwright, an API client for that server, and the screenshots' directory."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BACKEND, IS_POSTGRES, REDIS_URL
from tests.replica_server import ROOT, ReplicaServer

CHROMIUM = os.environ.get("JUNCTION_TEST_CHROMIUM", "/usr/bin/chromium")
# Kept after the run: one PNG per page the browser tests open, per backend.
SCREENSHOTS = ROOT / "var" / "test-artifacts" / "console" / BACKEND


@pytest.fixture(scope="module")
def console_server(database_url: str) -> Iterator[ReplicaServer]:
    server = ReplicaServer(database_url, REDIS_URL if IS_POSTGRES else None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(console_server: ReplicaServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=console_server.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def tenant_id() -> str:
    # The server outlives each test's emptied tables; a tenant of its own per test keeps every
    # cache of the server (in-process on SQLite) from answering for a previous test.
    return f"ws-{uuid.uuid4().hex[:10]}"


def admin_link(server: ReplicaServer, database_url: str) -> str:
    """`junction admin-link`, as an operator runs it, against the server's database."""
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
    }
    env["REDIS_URL"] = REDIS_URL if IS_POSTGRES else ""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "admin-link", "--base-url", server.base_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
    )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page whose console errors (a CSP refusal included) fail the test."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("console", lambda message: message.type == "error" and errors.append(message.text))
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.console_errors = errors
    try:
        yield opened
    finally:
        await context.close()
    assert not errors, f"the browser reported errors: {errors}"


async def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

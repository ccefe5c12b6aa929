"""The `junction` command."""

from __future__ import annotations

import httpx
import pytest

from app.cli import main
from app.core.auth import TokenVerifier
from app.core.config import Settings
from tests.conftest import bearer


async def test_token_command_mints_a_token_the_service_accepts(
    client: httpx.AsyncClient, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--tenant", "tenant-a", "--role", "admin", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    principal = await TokenVerifier(settings).verify(token)
    assert principal.tenants == {"tenant-a"}
    assert principal.roles == {"admin"}
    response = await client.get("/api/admin/workspaces/tenant-a/usage", headers=bearer(token))
    assert response.status_code == 200


def test_an_unknown_role_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["token", "--tenant", "t", "--role", "root"])


def test_serve_refuses_several_workers_without_redis(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["serve", "--workers", "2"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err

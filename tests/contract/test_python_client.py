"""A Python client generated from the document (openapi-python-client) builds without warnings
and drives a scenario against a served Junction."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.devtools.oauth_provider import LocalOAuthServer
from tests.conftest import TokenFactory

VENV_BIN = Path(sys.executable).parent
TENANT = "contract-t"


def generate(openapi_file: Path, output: Path) -> str:
    """Run the generator as an adopter would; its whole output, for the warnings check."""
    done = subprocess.run(
        [
            str(VENV_BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(openapi_file),
            "--output-path",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        # Its post-generation hooks run ruff, from this venv.
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def generated(openapi_file: Path, tmp_path: Path) -> Iterator[tuple[ModuleType, str]]:
    output = tmp_path / "client"
    log = generate(openapi_file, output)
    sys.path.insert(0, str(output))
    try:
        yield importlib.import_module("junction_client"), log
    finally:
        sys.path.remove(str(output))
        for name in [name for name in sys.modules if name.startswith("junction_client")]:
            del sys.modules[name]


def call(module_path: str, **kwargs: Any) -> Any:
    """`sync_detailed` of one generated operation module."""
    return importlib.import_module(f"junction_client.api.{module_path}").sync_detailed(**kwargs)


def test_the_client_generates_every_operation_without_warnings(
    generated: tuple[ModuleType, str], openapi_file: Path
) -> None:
    _, log = generated
    assert "warning" not in log.lower(), log
    assert "unable" not in log.lower(), log
    document_ids = {
        operation["operationId"]
        for methods in __import__("json").loads(openapi_file.read_text())["paths"].values()
        for operation in methods.values()
    }
    api = Path(importlib.import_module("junction_client.api").__file__ or "").parent
    modules = {
        path.stem.replace("_", "-") for path in api.glob("*/*.py") if path.stem != "__init__"
    }
    assert modules == document_ids


def test_a_scenario_through_the_generated_client(
    generated: tuple[ModuleType, str],
    served: str,
    make_token: TokenFactory,
    oauth_server: LocalOAuthServer,
) -> None:
    junction_client, _ = generated
    models = importlib.import_module("junction_client.models")
    token = make_token(tenants=[TENANT], roles=["service", "admin"])
    api = junction_client.AuthenticatedClient(base_url=served, token=token)

    # Register a client for a custom provider (the project's OAuth server plays it).
    urls = oauth_server.provider_urls()
    created = call(
        "tokens.tokens_create_client",
        client=api,
        body=models.ClientCreate(
            tenant_id=TENANT,
            provider="contract_provider",
            name="Contract app",
            client_id=oauth_server.client_id,
            client_secret=oauth_server.client_secret,
            redirect_uri=f"{served}/token-management/auth/callback",
            authorization_url=urls["authorization_url"],
            token_url=urls["token_url"],
        ),
    )
    assert created.status_code == 201, created.content
    registered = created.parsed
    assert isinstance(registered, models.ClientOut) and registered.has_client_secret

    # Start a login: the authorization URL names the provider and carries the state.
    login = call(
        "tokens.tokens_start_login", client=api, client_id=registered.id, branch_id="shop-1"
    )
    assert login.status_code == 200, login.content
    assert isinstance(login.parsed, models.LoginOut)
    assert login.parsed.authorization_url.startswith(urls["authorization_url"])
    assert login.parsed.state in login.parsed.authorization_url

    # Read the configuration: the defaults, marked as such.
    config = call("configs.configs_get_config", client=api, tenant_id=TENANT)
    assert config.status_code == 200, config.content
    assert isinstance(config.parsed, models.ConfigDocument)
    assert config.parsed.tenant_id == TENANT

    # Record usage.
    usage = call(
        "usage.usage_record_openai_usage",
        client=api,
        body=models.UsageEventIn(
            tenant_id=TENANT,
            model="gpt-4o-mini",
            prompt_tokens=120,
            completion_tokens=30,
            source="contract",
            request_id="contract-1",
        ),
    )
    assert usage.status_code == 201, usage.content
    assert isinstance(usage.parsed, models.UsageEventRead)
    assert usage.parsed.total_tokens == 150

    # Read an error: a branch that never connected.
    missing = call(
        "tokens.tokens_read_token", client=api, branch_id="nobody", provider="contract_provider"
    )
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.ErrorResponse)
    assert missing.parsed.error == "connection_not_found"
    assert missing.parsed.detail

    # A 422 parses as the field-error body.
    invalid = call("tokens.tokens_list_connections", client=api, limit=0)
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, models.InvalidFieldsResponse)
    assert [field.field for field in invalid.parsed.fields] == ["query.limit"]

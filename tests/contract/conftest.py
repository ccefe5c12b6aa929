"""A real served Junction for the contract checks, and its OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from tests.conftest import IS_POSTGRES, REDIS_URL
from tests.replica_server import ReplicaServer


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings(_env_file=None)).openapi()
    return document


@pytest.fixture
def openapi_file(tmp_path: Path) -> Path:
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(openapi_document()))
    return path


@pytest.fixture
def served(database_url: str) -> Iterator[str]:
    """The base URL of a Junction served by uvicorn on the test database."""
    server = ReplicaServer(database_url, REDIS_URL if IS_POSTGRES else None)
    try:
        yield server.base_url
    finally:
        server.stop()


def get_json(url: str) -> Any:
    return httpx.get(url, timeout=10).json()

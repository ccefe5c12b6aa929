"""Settings: URL normalisation and refusal of development secrets outside dev."""

from __future__ import annotations

import pytest

from app.core.config import ConfigurationError, Settings, normalize_database_url
from app.core.crypto import Keyring


def test_postgresql_urls_are_turned_into_asyncpg_urls() -> None:
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"


def test_outside_dev_the_default_jwt_secret_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="AUTH_JWT_SECRET"):
        Settings(_env_file=None, environment="production", encryption_keys=Keyring.generate_key())


def test_outside_dev_the_default_encryption_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="ENCRYPTION_KEYS"):
        Settings(_env_file=None, environment="production", auth_jwt_secret="x" * 40)


def test_outside_dev_real_secrets_are_accepted() -> None:
    settings = Settings(
        _env_file=None,
        environment="production",
        auth_jwt_secret="a-real-secret-" + "x" * 30,
        encryption_keys=Keyring.generate_key(),
    )
    assert settings.json_logs is True
    assert settings.jwt_algorithms == ["HS256"]

"""Settings: URL normalisation and refusal of development secrets outside dev."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

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


_REAL_KEY = Keyring.generate_key()


@pytest.mark.parametrize(
    "secret",
    [
        "change-me-to-a-long-random-string",  # .env.example
        "compose-local-secret-change-me-0123456789",  # the old docker-compose.yml default
        "CHANGEME-please-0123456789abcdef0123456789",
        "placeholder-secret-0123456789abcdef0123456789",
    ],
)
def test_outside_dev_a_placeholder_jwt_secret_is_refused(secret: str) -> None:
    with pytest.raises(ConfigurationError, match="AUTH_JWT_SECRET.*placeholder"):
        Settings(
            _env_file=None,
            environment="production",
            auth_jwt_secret=secret,
            encryption_keys=_REAL_KEY,
        )


def test_outside_dev_an_hs256_secret_under_32_bytes_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="AUTH_JWT_SECRET.*32 bytes"):
        Settings(
            _env_file=None,
            environment="production",
            auth_jwt_secret="q7Gx2pLw9rTz4vKb8nMc3sYd6fHj1aE",  # 31 bytes
            encryption_keys=_REAL_KEY,
        )


def test_outside_dev_an_hs256_secret_of_32_bytes_is_accepted() -> None:
    settings = Settings(
        _env_file=None,
        environment="production",
        auth_jwt_secret="q7Gx2pLw9rTz4vKb8nMc3sYd6fHj1aE0",
        encryption_keys=_REAL_KEY,
    )
    assert settings.jwt_secret is not None


def test_outside_dev_a_placeholder_encryption_key_is_refused() -> None:
    # The key the old docker-compose.yml shipped: base64 of "compose-local-key-change-me-32b!".
    placeholder = "compose:Y29tcG9zZS1sb2NhbC1rZXktY2hhbmdlLW1lLTMyYiE="
    with pytest.raises(ConfigurationError, match="ENCRYPTION_KEYS.*placeholder"):
        Settings(
            _env_file=None,
            environment="production",
            auth_jwt_secret="a-real-secret-" + "x" * 30,
            encryption_keys=f"{_REAL_KEY},{placeholder}",
        )


class _Unset(Exception):
    """A `${VAR:?message}` whose variable is not set: compose refuses to start."""


def _interpolate(value: str, environ: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}`, enough for our file."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        if environ.get(name):
            return environ[name]
        if operator == ":?":
            raise _Unset(f"{name}: {argument}")
        return argument if operator == ":-" else ""

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_docker_compose_does_not_start_in_production_with_secrets_written_in_it() -> None:
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    environment = compose["services"]["app"]["environment"]
    assert compose["services"]["migrate"]["environment"] == environment
    try:
        values = {key: _interpolate(str(value), {}) for key, value in environment.items()}
    except _Unset:
        return  # compose stops with the message before any container starts
    settings_values = {key.lower(): value for key, value in values.items()}
    if Settings(_env_file=None, **settings_values).is_dev:
        return  # a development stack: its secrets are development secrets
    pytest.fail("docker-compose.yml starts in production mode with the secrets it contains")


def test_docker_compose_secrets_from_the_environment_start_in_production() -> None:
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    environ = {
        "POSTGRES_PASSWORD": "pw0123456789",
        "AUTH_JWT_SECRET": "a-real-secret-" + "x" * 30,
        "ENCRYPTION_KEYS": _REAL_KEY,
    }
    values = {
        key.lower(): _interpolate(str(value), environ)
        for key, value in compose["services"]["app"]["environment"].items()
    }
    settings = Settings(_env_file=None, **values)
    assert not settings.is_dev
    assert (
        settings.database_url == "postgresql+asyncpg://junction:pw0123456789@postgres:5432/junction"
    )

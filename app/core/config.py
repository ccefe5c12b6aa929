"""Settings: one class, read from the environment (and `.env`), validated at start-up."""

from __future__ import annotations

import base64
import binascii
import json
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only defaults. Outside ENVIRONMENT=dev the service refuses to start with them.
DEV_JWT_SECRET = "junction-dev-secret-change-me-0123456789abcdef"  # noqa: S105
DEV_ENCRYPTION_KEY = "dev:ZGV2LWtleS1qdW5jdGlvbi0zMi1ieXRlcy1sb25nISE="  # base64 of 32 bytes

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./var/junction.db"

# Words that mark a value copied from an example (.env.example, docker-compose.yml, a tutorial)
# rather than generated: outside dev a secret or key containing one is refused.
_PLACEHOLDER_MARKS = (
    "changeme",
    "change-me",
    "change_me",
    "replaceme",
    "replace-me",
    "placeholder",
)
# RFC 7518 3.2: an HMAC key at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class ConfigurationError(RuntimeError):
    """The settings cannot run the service; the message names the setting."""


def _looks_like_placeholder(value: bytes) -> bool:
    lowered = value.lower()
    return any(mark.encode() in lowered for mark in _PLACEHOLDER_MARKS)


def _key_material(entry: str) -> bytes:
    """The bytes of one ENCRYPTION_KEYS entry (`kid:base64`), or b"" when it does not decode
    (the keyring refuses it at start-up with its own message)."""
    material = entry.partition(":")[2] or entry
    try:
        return base64.urlsafe_b64decode(material + "=" * (-len(material) % 4))
    except (binascii.Error, ValueError):
        return b""


def normalize_database_url(url: str) -> str:
    """Accept the URLs operators paste (`postgresql://`, `postgres://`); pick the async driver."""
    for prefix in (
        "postgresql://",
        "postgres://",
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_cors_origins(value: str) -> tuple[str, ...]:
    """CORS_ALLOW_ORIGINS as the origins a browser sends (`scheme://host[:port]`, lowercase, no
    default port), so an exact comparison matches; anything that is not an origin is refused."""
    origins: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry == "*":
            origins.append(entry)
            continue
        parts = urlsplit(entry)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme.lower() not in _DEFAULT_PORTS
            or not parts.hostname
            or parts.username is not None
            or parts.password is not None
            or parts.path
            or parts.query
            or parts.fragment
            or entry.endswith(("?", "#"))
            or port == -1
        ):
            raise ConfigurationError(
                f"CORS_ALLOW_ORIGINS: {entry!r} is not an origin; write scheme://host[:port] "
                "with no path or trailing slash (https://app.example.com), or '*'"
            )
        scheme = parts.scheme.lower()
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        shown_port = "" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}"
        origins.append(f"{scheme}://{host}{shown_port}")
    return tuple(dict.fromkeys(origins))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- runtime -------------------------------------------------------------------------
    environment: str = "dev"
    log_level: str = "INFO"
    log_json: bool | None = None  # default: JSON outside dev
    database_url: str = DEFAULT_SQLITE_URL
    redis_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    db_pool_timeout_s: float = Field(default=3.0, gt=0)
    db_statement_timeout_ms: int = Field(default=5000, ge=0)
    # PostgreSQL reached through PgBouncer in transaction pooling mode: no prepared statement
    # outlives its statement, and the statement timeout is set in each transaction rather than
    # on the connection (docs/pgbouncer.md).
    db_pgbouncer: bool = False
    cache_socket_timeout_s: float = Field(default=0.25, gt=0)
    cache_breaker_failures: int = Field(default=3, ge=1)
    cache_breaker_reset_s: float = Field(default=5.0, gt=0)
    http_timeout_s: float = Field(default=10.0, gt=0)
    # Set: GET /metrics answers only `Authorization: Bearer <this>` (Prometheus'
    # `authorization.credentials`). Unset: /metrics is open, for a scraper on a private network.
    metrics_bearer_token: str | None = None
    # The OpenAPI document and its pages (/openapi.json, /docs, /redoc). Swagger UI and ReDoc load
    # their scripts from a public CDN, so by default they are served in development only.
    docs_enabled: bool | None = None
    # Requests per caller in the `limits` notation ("600/minute", "20/second;600/minute"); a
    # caller is a token's `sub` within its tenants. Unset: no limit (and no cost). Counted in
    # Redis when REDIS_URL is set (shared by the replicas), else per process, and per process
    # while Redis is unreachable.
    rate_limit: str | None = None
    # The limit per client address for requests without a valid token; default: RATE_LIMIT.
    rate_limit_by_address: str | None = None

    # Browsers: the origins (`https://app.example.com`) whose pages may call the API, comma-
    # separated, exact; `*` for any (never with credentials). Unset: no CORS headers at all.
    cors_allow_origins: str = ""
    # Cookies and HTTP authentication on cross-origin calls (a bearer token needs none of it).
    cors_allow_credentials: bool = False
    # How long a browser may reuse a preflight's answer.
    cors_max_age_s: int = Field(default=600, ge=0, le=86400)
    # "read_only" for a cutover or a backup: writes answer 503 `maintenance` with Retry-After,
    # reads keep working, the background writers pause (app/core/maintenance.py).
    maintenance_mode: Literal["off", "read_only"] = "off"
    maintenance_retry_after_s: int = Field(default=60, ge=1, le=86400)

    # --- secrets -------------------------------------------------------------------------
    encryption_keys: str = DEV_ENCRYPTION_KEY
    # How often (at most) health recounts the stored secrets no key in ENCRYPTION_KEYS opens.
    key_check_interval_s: float = Field(default=300.0, gt=0)

    # --- auth ----------------------------------------------------------------------------
    auth_jwt_secret: str | None = None
    auth_jwt_public_key: str | None = None
    auth_jwks_url: str | None = None
    auth_audience: str = "junction"
    auth_issuer: str | None = None
    auth_algorithms: list[str] | None = None  # default: HS256 with a secret, RS256/ES256 with a key
    auth_revocation_sync_s: float = Field(default=15.0, gt=0)
    # The longest a token may still be valid: a token whose `exp` is further away than this (or
    # whose `exp - iat` is longer) is refused, so no revocation has to be kept longer.
    auth_max_token_lifetime_s: int = Field(default=86400, ge=60, le=30 * 86400)
    # Live revocations each replica holds in memory at most; past it a new one answers 503.
    auth_revocation_max_entries: int = Field(default=100_000, ge=1)

    # --- request limits (app/core/limits.py), checked before a request is read -----------
    # Bodies over this many bytes answer 413 (from Content-Length, or counted as they stream).
    request_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The usage batch route (POST /usage/openai): up to 1,000 events a request.
    request_max_batch_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # The request line and headers together; over it: 431.
    request_max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    # JSON bodies nested deeper than this answer 422 before they are parsed.
    request_max_json_depth: int = Field(default=32, ge=2, le=256)

    # --- token management (app/tokens) ---------------------------------------------------
    # {"google_search_console": {"token_url": "http://127.0.0.1:9999/token", ...}, ...}
    oauth_provider_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    oauth_state_ttl_s: int = Field(default=600, ge=30, le=600)
    oauth_callback_url: str | None = None
    # Renewed every third of it while its owner lives: a killed owner's lock lapses this soon.
    token_refresh_lock_ttl_s: float = Field(default=5.0, gt=0)
    token_refresh_wait_s: float = Field(default=15.0, gt=0)
    token_refresh_cooldown_s: float = Field(default=30.0, ge=0)
    token_refresh_backoff_max_s: float = Field(default=3600.0, gt=0)
    # A token is due its provider's margin before it expires, never less than this floor, never
    # more than half the lifetime it was issued with (app/tokens/timing.py).
    token_refresh_margin_floor_s: float = Field(default=2.0, ge=0, le=3600)
    # The least time between two automatic refreshes of one connection (reads and the loop; a
    # forced refresh ignores it); a provider's min_refresh_interval_s overrides it.
    token_refresh_min_interval_s: float = Field(default=1.0, ge=0, le=3600)
    # Fresh-token reads served from process memory (rows still encrypted), at most this long;
    # 0 turns the cache off.
    token_read_cache_ttl_s: float = Field(default=30.0, ge=0)
    # How long before a refresh token lapses (where its provider says: refresh_token_expires_in)
    # `refresh_token_expiring` is raised, so a user can be asked to reconnect in time.
    refresh_token_expiry_warning_s: float = Field(default=7 * 86400.0, ge=0)

    # --- the admin console (app/admin) ---------------------------------------------------
    # A `junction admin-link` URL opens a session once, within this many seconds.
    admin_link_ttl_s: int = Field(default=600, ge=10, le=86400)
    # A console session lasts this long (one opened with a bearer token no longer than it).
    admin_session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 86400)

    # --- monitoring (app/monitoring) -----------------------------------------------------
    monitor_enabled: bool = True
    monitor_interval_s: float = Field(default=60.0, gt=0)
    monitor_batch_size: int = Field(default=200, ge=1)
    monitor_concurrency: int = Field(default=10, ge=1)
    monitor_per_provider_concurrency: int = Field(default=4, ge=1)
    # Renewed every third of it while the loop works on the connection (as the refresh lock is).
    monitor_lease_s: float = Field(default=10.0, gt=0)
    monitor_idle_refresh_s: float = Field(default=86400.0, gt=0)
    monitor_shutdown_grace_s: float = Field(default=10.0, ge=0)

    # --- provider configurations (app/provider_configs) ----------------------------------
    provider_config_defaults: str | None = None  # a JSON document or a path to one
    provider_config_cache_ttl_s: int = Field(default=300, ge=1)
    provider_config_cache_enabled: bool = True
    # The change stream (GET /config/{tenant_id}/stream): streams one tenant may hold open on
    # one replica, the heartbeat comment's interval, and how often a stream reads the version
    # rows even when no wake-up came (a missed one costs latency, never an event).
    provider_config_streams_per_tenant: int = Field(default=16, ge=1, le=10_000)
    provider_config_stream_heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    provider_config_stream_poll_s: float = Field(default=15.0, gt=0, le=3600)

    # --- usage (app/usage) ---------------------------------------------------------------
    # {"gpt-4o": {"prompt": 2.5, "completion": 10.0}}: USD per million tokens, merged over defaults;
    # also "cached_prompt", "reasoning", and "effective_from" (a date; a list of entries per model
    # gives its price history). See docs/usage.md.
    usage_model_prices: dict[str, dict[str, float | str] | list[dict[str, float | str]]] = Field(
        default_factory=dict
    )
    # Group commit of single-event POST /usage/openai: a replica's concurrent requests share one
    # transaction, collected for up to WAIT_MS or MAX_EVENTS (0: every request commits its own).
    usage_group_commit_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    usage_group_commit_max_events: int = Field(default=200, ge=0, le=1000)
    # How often each replica folds closed days' rollup shards into one row (0: never).
    usage_rollup_fold_interval_s: float = Field(default=600.0, ge=0)
    # {"free": {"tokens": 100000, "calls": 1000}}: monthly limits, merged over defaults
    usage_tier_limits: dict[str, dict[str, int]] = Field(default_factory=dict)

    @field_validator("database_url")
    @classmethod
    def _normalize_database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("rate_limit", "rate_limit_by_address")
    @classmethod
    def _parse_rate_limit(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse_many  # here: the settings module stays cheap to import

            parse_many(value)  # ValueError: pydantic names the setting
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _check_cors_origins(cls, value: str) -> str:
        parse_cors_origins(value)  # ConfigurationError names the setting and the entry
        return value

    @model_validator(mode="after")
    def _refuse_wildcard_origin_with_credentials(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ConfigurationError(
                "CORS_ALLOW_ORIGINS='*' cannot be combined with CORS_ALLOW_CREDENTIALS=true: "
                "any site could then make calls with its visitors' credentials; list the origins"
            )
        return self

    @field_validator("auth_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_dev(self) -> Settings:
        if self.is_dev:
            return self
        missing: list[str] = []
        if not (self.auth_jwt_secret or self.auth_jwt_public_key or self.auth_jwks_url):
            missing.append("AUTH_JWT_SECRET (or AUTH_JWT_PUBLIC_KEY / AUTH_JWKS_URL)")
        elif self.auth_jwt_secret == DEV_JWT_SECRET:
            missing.append("AUTH_JWT_SECRET (the development default is refused)")
        elif self.auth_jwt_secret:
            missing.extend(self._weak_jwt_secret(self.auth_jwt_secret))
        keys = [k.strip() for k in self.encryption_keys.split(",") if k.strip()]
        if DEV_ENCRYPTION_KEY in keys:
            missing.append("ENCRYPTION_KEYS (the development default key is refused)")
        elif any(_looks_like_placeholder(_key_material(key)) for key in keys):
            missing.append("ENCRYPTION_KEYS (a placeholder key from an example is refused)")
        if self.metrics_bearer_token and _looks_like_placeholder(
            self.metrics_bearer_token.encode()
        ):
            missing.append("METRICS_BEARER_TOKEN (a placeholder value from an example is refused)")
        if missing:
            raise ConfigurationError(
                f"ENVIRONMENT={self.environment} needs real secrets; set: " + "; ".join(missing)
            )
        return self

    def _weak_jwt_secret(self, secret: str) -> list[str]:
        if _looks_like_placeholder(secret.encode()):
            return ["AUTH_JWT_SECRET (a placeholder value from an example is refused)"]
        needed = max((_HMAC_MIN_BYTES.get(a.upper(), 0) for a in self.jwt_algorithms), default=0)
        if len(secret.encode()) < needed:
            return [
                f"AUTH_JWT_SECRET (at least {needed} bytes for {', '.join(self.jwt_algorithms)})"
            ]
        return []

    @property
    def is_dev(self) -> bool:
        return self.environment.lower() in {"dev", "development", "test"}

    @property
    def read_only(self) -> bool:
        return self.maintenance_mode == "read_only"

    @property
    def serves_docs(self) -> bool:
        return self.is_dev if self.docs_enabled is None else self.docs_enabled

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return parse_cors_origins(self.cors_allow_origins)

    @property
    def json_logs(self) -> bool:
        return (not self.is_dev) if self.log_json is None else self.log_json

    @property
    def jwt_secret(self) -> str | None:
        if self.auth_jwt_secret:
            return self.auth_jwt_secret
        if self.auth_jwt_public_key or self.auth_jwks_url:
            return None
        return DEV_JWT_SECRET if self.is_dev else None

    @cached_property
    def jwt_algorithms(self) -> list[str]:
        if self.auth_algorithms:
            return list(self.auth_algorithms)
        if self.jwt_secret:
            return ["HS256"]
        return ["RS256", "ES256"]

    def load_provider_config_defaults(self) -> dict[str, Any]:
        """The defaults document for tenants without configuration: inline JSON or a file path."""
        raw = self.provider_config_defaults
        if not raw:
            return {}
        text = raw if raw.lstrip().startswith("{") else open(raw, encoding="utf-8").read()  # noqa: SIM115
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ConfigurationError("PROVIDER_CONFIG_DEFAULTS must be a JSON object")
        return loaded

"""Request and response shapes of /config: the older service's document, kept field for field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from app.core.schemas import RequestModel, bounded_object

ProviderType = Literal["map", "weather", "satellite", "payment", "sms", "notification"]
Priority = Literal["primary", "secondary", "fallback"]
ChangeType = Literal["created", "updated", "enabled", "disabled", "deleted", "rolled_back"]

PROVIDER_TYPES: tuple[str, ...] = ("map", "weather", "satellite", "payment", "sms", "notification")
PRIORITY_RANK = {"primary": 0, "secondary": 1, "fallback": 2}
MAX_CONFIG_DATA_BYTES = 64 * 1024
# A provider's settings are a flat-ish document: deeper or larger ones are refused before they
# are stored (or walked by anything recursive).
MAX_CONFIG_DATA_DEPTH = 8
MAX_CONFIG_DATA_ITEMS = 2000
# Providers of one type in one POST; a tenant's real lists hold a handful.
MAX_PROVIDERS_PER_TYPE = 50
MAX_HISTORY_LIMIT = 200
# Version numbers are 32-bit integer columns; a larger number can only be "no such version".
MAX_VERSION = 2**31 - 1
# Free text in a query parameter: PostgreSQL text cannot hold a NUL character.
NO_NUL_PATTERN = r"^[^\x00]*$"


def list_field(provider_type: str) -> str:
    return f"{provider_type}_providers"


class ProviderIn(RequestModel):
    """One provider to upsert. Omitted fields keep their current value (or the default on create);
    `api_key: null` removes the key; the masked value a GET returned means "unchanged"."""

    provider_name: str = Field(min_length=1, max_length=100)
    priority: Priority | None = None
    enabled: bool | None = None
    config_data: (
        Annotated[dict[str, Any], bounded_object(MAX_CONFIG_DATA_DEPTH, MAX_CONFIG_DATA_ITEMS)]
        | None
    ) = None
    api_key: str | None = Field(default=None, min_length=1, max_length=4096)
    api_secret: str | None = Field(default=None, min_length=1, max_length=4096)
    expected_version: int | None = Field(
        default=None,
        ge=0,
        le=MAX_VERSION,
        description="0 = create only; otherwise the version you last read",
    )
    # Read-only fields of a GET document: accepted and ignored, so a document can be posted back.
    id: str | None = Field(default=None, max_length=64)
    version: int | None = None
    updated_at: str | None = Field(default=None, max_length=64)
    updated_by: str | None = Field(default=None, max_length=1024)
    source: str | None = Field(default=None, max_length=32)


ProviderList = Annotated[list[ProviderIn], Field(max_length=MAX_PROVIDERS_PER_TYPE)]


class ConfigWrite(RequestModel):
    """Body of POST /config/{tenant_id}: any of the six provider lists, each upserted by name."""

    tenant_id: str | None = Field(default=None, max_length=128)
    map_providers: ProviderList | None = None
    weather_providers: ProviderList | None = None
    satellite_providers: ProviderList | None = None
    payment_providers: ProviderList | None = None
    sms_providers: ProviderList | None = None
    notification_providers: ProviderList | None = None
    change_reason: str | None = Field(default=None, max_length=1000)
    source: str | None = Field(default=None, max_length=32)  # read-only in a GET document

    def providers(self) -> list[tuple[str, ProviderIn]]:
        listed: list[tuple[str, ProviderIn]] = []
        for provider_type in PROVIDER_TYPES:
            for provider in getattr(self, list_field(provider_type)) or []:
                listed.append((provider_type, provider))
        return listed


class RollbackRequest(RequestModel):
    config_id: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1, le=MAX_VERSION)
    expected_version: int | None = Field(default=None, ge=0, le=MAX_VERSION)
    reason: str | None = Field(default=None, min_length=1, max_length=1000)
    change_reason: str | None = Field(
        default=None, min_length=1, max_length=1000, description="alias of `reason`"
    )

    @model_validator(mode="after")
    def _one_reason(self) -> RollbackRequest:
        if not (self.reason or self.change_reason):
            raise ValueError("reason is required for a rollback")
        return self

    @property
    def why(self) -> str:
        return self.reason or self.change_reason or ""


# --- responses (documentation; the routes serialize these shapes themselves) ------------------


class ConfiguredProviderOut(BaseModel):
    id: str | None
    provider_name: str
    priority: Priority
    enabled: bool
    config_data: dict[str, Any]
    api_key: str | None = Field(description="masked ('****' + last four) unless include_secrets")
    api_secret: str | None
    version: int = Field(description="0 for a default that was never stored")
    updated_at: datetime | None
    updated_by: str | None
    source: Literal["tenant", "default"]


class ConfigDocument(BaseModel):
    tenant_id: str
    source: Literal["tenant", "default"] = Field(
        description="'default' when the tenant has stored no configuration at all"
    )
    map_providers: list[ConfiguredProviderOut] | None = None
    weather_providers: list[ConfiguredProviderOut] | None = None
    satellite_providers: list[ConfiguredProviderOut] | None = None
    payment_providers: list[ConfiguredProviderOut] | None = None
    sms_providers: list[ConfiguredProviderOut] | None = None
    notification_providers: list[ConfiguredProviderOut] | None = None


class SnapshotOut(BaseModel):
    provider_type: ProviderType
    provider_name: str
    priority: Priority
    enabled: bool
    config_data: dict[str, Any]
    api_key: str | None
    api_secret: str | None
    deleted: bool


class FieldChangeOut(BaseModel):
    """One field that differs between two versions."""

    field: str = Field(
        description="provider_name, priority, enabled, deleted, a secret's name (api_key, "
        "api_secret), or a config_data key by its dotted path (a '.' inside a key is escaped "
        "as '\\.')",
        examples=["config_data.style.zoom"],
    )
    change: Literal["added", "removed", "changed"] = Field(
        description="added or removed: the field exists on one side only; a secret is only "
        "ever 'changed'",
        examples=["changed"],
    )
    before: Any = Field(
        default=None,
        description="the value before (absent when added, and for every secret)",
        examples=[3],
    )
    after: Any = Field(
        default=None,
        description="the value after (absent when removed, and for every secret)",
        examples=[4],
    )
    secret: bool = Field(
        description="a secret field: its values are never shown, only that it changed",
        examples=[False],
    )


class VersionDiffOut(BaseModel):
    """What a version changed against the one before it."""

    from_version: int | None = Field(
        description="the version compared against; null for a configuration's first version",
        examples=[2],
    )
    to_version: int = Field(description="the version that made these changes", examples=[3])
    changes: list[FieldChangeOut] = Field(description="the changed fields, in a fixed order")


class ConfigDiff(BaseModel):
    """Answer of GET /config/{tenant_id}/diff: the changes from one version to another."""

    config_id: str = Field(description="the configuration compared", examples=["c0ffee"])
    provider_type: ProviderType = Field(description="its provider type", examples=["map"])
    provider_name: str = Field(description="its provider name", examples=["google"])
    from_version: int = Field(
        description="the version compared from (0: before the configuration existed)",
        examples=[1],
    )
    to_version: int = Field(description="the version compared to", examples=[3])
    changes: list[FieldChangeOut] = Field(
        description="the fields that differ, from `from_version` to `to_version`"
    )


class RollbackPreview(BaseModel):
    """Answer of POST /config/{tenant_id}/rollback?dry_run=true: what the rollback would change."""

    dry_run: Literal[True] = Field(description="always true: nothing was written")
    config_id: str = Field(description="the configuration", examples=["c0ffee"])
    provider_type: ProviderType = Field(description="its provider type", examples=["map"])
    provider_name: str = Field(description="its provider name", examples=["google"])
    current_version: int = Field(description="its version now", examples=[5])
    source_version: int = Field(description="the version whose content it restores", examples=[2])
    new_version: int = Field(
        description="the version the rollback would write (if nothing else writes first)",
        examples=[6],
    )
    changes: list[FieldChangeOut] = Field(
        description="the fields that would change, from the current version to the restored one"
    )


class HistoryItem(BaseModel):
    config_id: str
    version: int
    change_type: ChangeType
    changed_at: datetime
    changed_by: str
    change_reason: str | None
    source_version: int | None
    snapshot: SnapshotOut
    diff: VersionDiffOut = Field(description="what this version changed against the previous one")


class HistoryPage(BaseModel):
    items: list[HistoryItem]
    next_cursor: str | None = None


# --- defaults from settings ------------------------------------------------------------------


class DefaultProvider(BaseModel):
    model_config = {"extra": "forbid"}

    provider_name: str = Field(min_length=1, max_length=100)
    priority: Priority = "primary"
    enabled: bool = True
    config_data: dict[str, Any] = Field(default_factory=dict)
    api_key: str | None = None
    api_secret: str | None = None


class DefaultsDocument(BaseModel):
    model_config = {"extra": "ignore"}

    map_providers: list[DefaultProvider] = Field(default_factory=list)
    weather_providers: list[DefaultProvider] = Field(default_factory=list)
    satellite_providers: list[DefaultProvider] = Field(default_factory=list)
    payment_providers: list[DefaultProvider] = Field(default_factory=list)
    sms_providers: list[DefaultProvider] = Field(default_factory=list)
    notification_providers: list[DefaultProvider] = Field(default_factory=list)

"""The bodies health and readiness answer, whether the service is well or not (the 503 of
each is this body too, not the error body: an orchestrator or a client reads both alike)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class HealthReport(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="`ok`; `degraded` when the cache, the monitoring loop or the keys need "
        "attention; `unavailable` (with 503) when the database cannot be reached"
    )
    version: str = Field(description="the service's version", examples=["0.9.0"])
    checks: dict[str, str | int] = Field(
        description="each dependency's state: `database`, `cache` (`memory:ok`, `redis:ok`, "
        "`redis:recovering`, `redis:unavailable`), `monitor`, `keys`, `maintenance`, and "
        "`secrets_under_unknown_keys` (a count) when some are",
        examples=[
            {
                "database": "ok",
                "cache": "redis:ok",
                "monitor": "running",
                "keys": "ok",
                "maintenance": "off",
            }
        ],
    )


class SchemaState(BaseModel):
    current: str | None = Field(description="the database's migration (none: no schema)")
    expected: str = Field(description="the migration this code needs")


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"] = Field(
        description="`ready` when the database answers at the expected migration"
    )
    schema_: SchemaState = Field(alias="schema", description="the schema's migrations")

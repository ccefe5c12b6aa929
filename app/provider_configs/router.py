"""HTTP routes of the provider_configs domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["provider_configs"])

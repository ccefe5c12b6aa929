"""HTTP routes of the monitoring domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["monitoring"])

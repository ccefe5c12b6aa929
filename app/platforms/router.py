"""HTTP routes of the platforms domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["platforms"])

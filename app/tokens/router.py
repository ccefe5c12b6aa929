"""HTTP routes of the tokens domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["tokens"])

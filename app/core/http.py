"""The one outbound HTTP client, built in the lifespan: timeouts set, TLS verified, no redirects."""

from __future__ import annotations

import httpx

from app import __version__
from app.core.config import Settings


def build_http_client(settings: Settings) -> httpx.AsyncClient:
    timeout = httpx.Timeout(settings.http_timeout_s, connect=min(5.0, settings.http_timeout_s))
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,  # a token endpoint that redirects is misconfigured or hostile
        verify=True,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"User-Agent": f"junction/{__version__}"},
    )

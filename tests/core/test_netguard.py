"""Tenant-chosen outbound destinations must be public outside development."""

from __future__ import annotations

import pytest

from app.core.netguard import UnsafeDestination, ensure_public_destination


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/token",
        "https://localhost/token",
        "https://10.0.0.5/token",
        "https://192.168.1.1:8443/token",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/token",
        "https://[::ffff:10.0.0.1]/token",
        "https://0.0.0.0/token",
    ],
)
async def test_private_loopback_and_reserved_destinations_are_refused(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await ensure_public_destination(url, allow_private=False)


async def test_a_public_address_is_allowed() -> None:
    await ensure_public_destination("https://93.184.216.34/token", allow_private=False)


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UnsafeDestination, match="does not resolve"):
        await ensure_public_destination("https://no-such-host.invalid/x", allow_private=False)


async def test_development_allows_private_destinations() -> None:
    await ensure_public_destination("https://127.0.0.1/token", allow_private=True)

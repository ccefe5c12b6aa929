"""Outbound destinations chosen by tenants (custom OAuth endpoints, webhooks) must be public.

A tenant must not be able to aim Junction's own HTTP client, which carries client secrets and
refresh tokens, at services inside Junction's network. Outside development every address a host
name resolves to is checked before a call. (The connection itself resolves again; pinning the
checked address would also close DNS rebinding, and is the next step if that threat matters.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from app.core.errors import DomainError


class UnsafeDestination(DomainError):
    status_code = 422
    code = "unsafe_destination"


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def ensure_public_destination(url: str, *, allow_private: bool) -> None:
    """Raise `UnsafeDestination` unless every address of the URL's host is a public one."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise UnsafeDestination("the URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeDestination(f"the host '{host}' does not resolve") from exc
    addresses = {info[4][0] for info in infos}
    if not addresses or not all(_is_public(str(address)) for address in addresses):
        raise UnsafeDestination(
            f"the host '{host}' resolves to a private, loopback or reserved address"
        )

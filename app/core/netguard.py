"""Outbound destinations chosen by tenants (custom OAuth endpoints, webhooks) must be public.

A tenant must not be able to aim Junction's own HTTP client, which carries client secrets and
refresh tokens, at services inside Junction's network. Outside development every address a host
name resolves to is checked before a call, and the call is made to an address that was checked
(`post`): the connection does not resolve the name again, so a name that answers a public address
to the check and a private one a moment later (DNS rebinding) gets nowhere. The request keeps the
name in its `Host` header and, over TLS, as the SNI name the certificate is verified against; it
asks for the connection to be closed afterwards, so no pooled connection verified for one name
carries a request for another.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.core.errors import DomainError

# At most this many of the checked addresses are tried, IPv4 first, when one refuses.
_MAX_ATTEMPTS = 3


class UnsafeDestination(DomainError):
    status_code = 422
    code = "unsafe_destination"


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _checked_addresses(url: str, *, allow_private: bool) -> list[str]:
    """The addresses of the URL's host, IPv4 first; all public unless `allow_private`."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise UnsafeDestination("the URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeDestination(f"the host '{host}' does not resolve") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeDestination(f"the host '{host}' does not resolve")
    if not allow_private and not all(_is_public(address) for address in addresses):
        raise UnsafeDestination(
            f"the host '{host}' resolves to a private, loopback or reserved address"
        )
    return sorted(addresses, key=lambda address: ":" in address)


async def ensure_public_destination(url: str, *, allow_private: bool) -> None:
    """Raise `UnsafeDestination` unless every address of the URL's host is a public one."""
    if allow_private:
        return
    await _checked_addresses(url, allow_private=False)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _aimed_at(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with `address` in place of its host, the Host header, the TLS name to verify."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    port = f":{parts.port}" if parts.port else ""
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{literal}{port}" if userinfo else f"{literal}{port}"
    aimed = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    headers = {"Host": f"{host}{port}", "Connection": "close"}
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return aimed, headers, extensions


async def post(
    http: httpx.AsyncClient,
    url: str,
    *,
    allow_private: bool,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """POST to a tenant-chosen URL, connecting only to an address that was checked.

    Raises `UnsafeDestination` before any connection when the host is not public (unless
    `allow_private`), and httpx's errors like `http.post` does.
    """
    host = urlsplit(url).hostname or ""
    if _is_address(host):
        if not allow_private and not _is_public(host):
            raise UnsafeDestination(f"the address '{host}' is private, loopback or reserved")
        return await http.post(url, headers=headers, **kwargs)
    addresses = await _checked_addresses(url, allow_private=allow_private)
    last_error: httpx.ConnectError | None = None
    for address in addresses[:_MAX_ATTEMPTS]:
        aimed, pinned_headers, extensions = _aimed_at(url, address)
        try:
            merged = {**(headers or {}), **pinned_headers}
            return await http.post(aimed, headers=merged, extensions=extensions, **kwargs)
        except httpx.ConnectError as exc:
            last_error = exc
    assert last_error is not None
    raise last_error

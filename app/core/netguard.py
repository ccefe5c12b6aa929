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


# IPv6 prefixes whose last 32 bits are an IPv4 address the packet is delivered to: the IPv4
# address decides. NAT64's well-known prefix (RFC 6052) is what DNS64 answers on an IPv6-only
# network for every IPv4-only host, so a public IPv4 behind it stays reachable.
_EMBEDS_IPV4_LAST_32 = (
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped (RFC 4291)
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
)
# Refused whatever they carry: deprecated, local-use or tunnel ranges no OAuth server or webhook
# lives in, and whose embedded IPv4 (if any) is at a place a check could misread.
_REFUSED_IPV6 = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible, deprecated (RFC 4291 2.5.5.1)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (RFC 2765, obsoleted)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64 local-use (RFC 8215)
    ipaddress.IPv6Network("2001::/32"),  # Teredo: a client tunnel, its IPv4s obfuscated
    ipaddress.IPv6Network("2001:10::/28"),  # ORCHID, deprecated (RFC 4843)
    ipaddress.IPv6Network("2001:db8::/32"),  # documentation
    ipaddress.IPv6Network("3fff::/20"),  # documentation (RFC 9637)
    ipaddress.IPv6Network("3ffe::/16"),  # 6bone, returned (RFC 3701)
    ipaddress.IPv6Network("fec0::/10"),  # site-local, deprecated (RFC 3879)
)
# Global unicast: everything outside it is reserved, local or multicast.
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_6TO4 = ipaddress.IPv6Network("2002::/16")
# Python's `is_global` lags the IANA registries (it differs between 3.11 patch releases): these
# are refused whatever the interpreter's tables say.
_REFUSED_IPV4 = (
    ipaddress.IPv4Network("0.0.0.0/8"),
    ipaddress.IPv4Network("100.64.0.0/10"),  # shared address space (carrier-grade NAT)
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv4Network("192.88.99.0/24"),  # 6to4 relay anycast, deprecated (RFC 7526)
    ipaddress.IPv4Network("198.18.0.0/15"),  # benchmarking
    ipaddress.IPv4Network("240.0.0.0/4"),  # reserved, and the broadcast address
)


def _is_public_ipv4(ip: ipaddress.IPv4Address) -> bool:
    return (
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not any(ip in network for network in _REFUSED_IPV4)
    )


def _is_public_ipv6(ip: ipaddress.IPv6Address) -> bool:
    for network in _EMBEDS_IPV4_LAST_32:
        if ip in network:
            return _is_public_ipv4(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if any(ip in network for network in _REFUSED_IPV6):
        return False
    if ip in _6TO4:
        # 2002:AABB:CCDD::/48 is routed to the IPv4 address AA.BB.CC.DD through a relay.
        assert ip.sixtofour is not None
        if not _is_public_ipv4(ip.sixtofour):
            return False
    return ip in _GLOBAL_UNICAST and ip.is_global and not ip.is_multicast


def _is_public(address: str) -> bool:
    """Whether `address` (an IP literal, IPv6 possibly with a zone) is a public destination."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_ipv4(ip)
    return _is_public_ipv6(ip)


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

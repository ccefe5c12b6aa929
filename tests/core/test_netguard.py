"""Tenant-chosen outbound destinations must be public outside development."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.core.netguard import UnsafeDestination, _aimed_at, ensure_public_destination, post
from app.devtools.http_server import BackgroundHTTPServer


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


# IPv6 forms that reach an IPv4 address, or sit in a deprecated or local range; each passed as
# public before (Python's `is_global` knows none of them as non-public on every 3.11 release).
@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",  # IPv4-compatible loopback
        "::8.8.8.8",  # IPv4-compatible is deprecated whatever it carries
        "::ffff:0:7f00:1",  # IPv4-translated loopback
        "::ffff:0:808:808",  # IPv4-translated, obsoleted
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",  # IPv4-mapped cloud metadata
        "64:ff9b::7f00:1",  # NAT64 well-known prefix, loopback
        "64:ff9b::a00:5",  # NAT64 well-known prefix, 10.0.0.5
        "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix, 169.254.169.254
        "64:ff9b:1::808:808",  # NAT64 local-use prefix
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:5::1",  # 6to4 of 10.0.0.5
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001::7f00:1",  # Teredo
        "fec0::1",  # site-local, deprecated
        "fed0::1",  # site-local, deprecated
        "3ffe::1",  # 6bone, returned
        "2001:10::1",  # ORCHID, deprecated
        "2001:db8::1",  # documentation
        "3fff::1",  # documentation
        "fc00::1",  # unique local
        "fe80::1%eth0",  # link-local with a zone
        "ff0e::1",  # global-scope multicast
        "4000::1",  # outside global unicast
        "::",
        "100.64.0.1",  # shared address space
        "192.88.99.1",  # 6to4 relay anycast, deprecated
        "198.18.0.1",  # benchmarking
        "224.0.0.1",  # multicast
        "255.255.255.255",
    ],
)
async def test_ipv6_forms_of_private_ipv4_and_deprecated_ranges_are_refused(
    address: str,
) -> None:
    literal = f"[{address.replace('%', '%25')}]" if ":" in address else address
    url = f"https://{literal}/token"
    with pytest.raises(UnsafeDestination):
        await ensure_public_destination(url, allow_private=False)
    async with httpx.AsyncClient() as http:
        with pytest.raises(UnsafeDestination):
            await post(http, url, allow_private=False, content=b"x")


@pytest.mark.parametrize(
    "address",
    [
        "2606:2800:220:1::1",  # global unicast
        "::ffff:93.184.216.34",  # IPv4-mapped public address
        "64:ff9b::5db8:d822",  # NAT64 (DNS64) of 93.184.216.34
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
    ],
)
async def test_ipv6_forms_of_a_public_address_are_allowed(address: str) -> None:
    await ensure_public_destination(f"https://[{address}]/token", allow_private=False)


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UnsafeDestination, match="does not resolve"):
        await ensure_public_destination("https://no-such-host.invalid/x", allow_private=False)


async def test_development_allows_private_destinations() -> None:
    await ensure_public_destination("https://127.0.0.1/token", allow_private=True)


# --- calls are made to the address that was checked --------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append({**dict(self.headers.items()), "peer": self.client_address[0]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    with BackgroundHTTPServer(handler) as server:
        yield server.port, seen


async def test_a_call_by_name_goes_to_the_checked_address_with_the_name_as_host(
    recorder: tuple[int, list[dict[str, str]]],
) -> None:
    port, seen = recorder
    async with httpx.AsyncClient() as http:
        response = await post(
            http, f"http://localhost:{port}/hook", allow_private=True, content=b"x"
        )
    assert response.status_code == 200
    assert len(seen) == 1
    assert seen[0]["Host"] == f"localhost:{port}"
    assert seen[0]["Connection"] == "close"  # no pooled connection outlives the checked call
    assert seen[0]["peer"] == "127.0.0.1"


async def test_outside_development_a_private_name_is_refused_before_any_connection(
    recorder: tuple[int, list[dict[str, str]]],
) -> None:
    port, seen = recorder
    async with httpx.AsyncClient() as http:
        for url in (f"http://localhost:{port}/hook", f"http://127.0.0.1:{port}/hook"):
            with pytest.raises(UnsafeDestination):
                await post(http, url, allow_private=False, content=b"x")
    assert seen == []


@pytest.mark.parametrize(
    ("url", "address", "aimed", "host"),
    [
        (
            "https://auth.example.com/oauth/token?x=1",
            "93.184.216.34",
            "https://93.184.216.34/oauth/token?x=1",
            "auth.example.com",
        ),
        (
            "https://auth.example.com:8443/t",
            "2606:2800:220:1::1",
            "https://[2606:2800:220:1::1]:8443/t",
            "auth.example.com:8443",
        ),
    ],
)
def test_the_request_is_aimed_at_the_address_and_verified_against_the_name(
    url: str, address: str, aimed: str, host: str
) -> None:
    target, headers, extensions = _aimed_at(url, address)
    assert target == aimed
    assert headers["Host"] == host
    assert extensions == {"sni_hostname": "auth.example.com"}


def _self_signed_for_localhost(directory: Path) -> tuple[Path, Path]:
    """A certificate valid for the name `localhost` only (not for 127.0.0.1), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_over_tls_the_certificate_is_verified_against_the_name_not_the_address(
    tmp_path: Path,
) -> None:
    cert_path, key_path = _self_signed_for_localhost(tmp_path)
    seen: list[dict[str, str]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    server = BackgroundHTTPServer(handler, tls=server_context).start()
    port = server.port
    trust = ssl.create_default_context(cafile=str(cert_path))
    try:
        async with httpx.AsyncClient(verify=trust) as http:
            # Connected to 127.0.0.1, verified as `localhost`: the pinned call succeeds.
            response = await post(
                http, f"https://localhost:{port}/hook", allow_private=True, content=b"x"
            )
            assert response.status_code == 200
            # The same server by address: its certificate does not name 127.0.0.1.
            with pytest.raises(httpx.ConnectError):
                await http.post(f"https://127.0.0.1:{port}/hook", content=b"x")
    finally:
        server.stop()
    assert [entry["Host"] for entry in seen] == [f"localhost:{port}"]

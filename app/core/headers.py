"""The security headers every answer carries, built once."""

from __future__ import annotations

# No MIME sniffing of a JSON body into something a browser would run, and no page of the service
# (the docs) inside another site's frame: CSP for current browsers, X-Frame-Options for older ones.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)

# The same, for a Starlette `Response(headers=...)` built outside the middleware that adds them.
SECURITY_HEADER_DICT = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}

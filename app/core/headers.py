"""The security headers every answer carries, built once; a request header read off the scope."""

from __future__ import annotations

from starlette.types import Scope

# No MIME sniffing of a JSON body into something a browser would run, and no page of the service
# (the docs) inside another site's frame: CSP for current browsers, X-Frame-Options for older ones.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)

# The same, for a Starlette `Response(headers=...)` built outside the middleware that adds them.
SECURITY_HEADER_DICT = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}


def request_header(scope: Scope, name: bytes) -> str | None:
    """The first value of the request header `name` (lowercase: the server lowercases them), as
    `request.headers.get` gives it, without building a `Headers` (a hot read reads two)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None

"""HTTP conditional requests (RFC 9110 §13): reading `If-None-Match` and `If-Match` headers.

The routes own their entity tags; this module only compares them with what a client sent.
"""

from __future__ import annotations


def _tags(header: str) -> list[str]:
    # Entity tags never contain a comma (RFC 9110 etagc), so a split is exact.
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def none_match(header: str | None, etag: str) -> bool:
    """True when `If-None-Match` names `etag` (weak comparison) or is `*`: answer 304."""
    if header is None:
        return False
    if header == etag:  # the common case: the one tag the client was given
        return True
    return any(tag == "*" or _opaque(tag) == etag for tag in _tags(header))


def if_match_tags(header: str) -> list[str] | None:
    """The strong tags an `If-Match` names; None for `*` (any current representation). A weak
    tag can never match (strong comparison) and is left out."""
    tags = _tags(header)
    if "*" in tags:
        return None
    return [tag for tag in tags if not tag.startswith("W/")]

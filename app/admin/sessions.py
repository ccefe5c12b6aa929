"""Signing in to the console: one-time links, bearer-token sign-in, and the sessions they open.

A link's secret and a session's secret are random, handed to the operator (in the printed URL)
or the browser (in an HttpOnly cookie) and stored only as their SHA-256, so a copy of the table
signs no one in. A link is spent by one conditional UPDATE: of two concurrent uses, on any
replica, exactly one opens a session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.admin.models import KIND_LINK, KIND_SESSION, AdminSession
from app.core import permissions
from app.core.auth import ALL_TENANTS, ROLE_ADMIN, Principal
from app.core.config import Settings
from app.core.db import utcnow
from app.core.deps import verified_caller
from app.core.errors import Unauthorized
from app.state import AppState

SESSION_COOKIE = "junction_admin_session"
# The double-submitted token of the sign-in forms, before any session exists.
SIGN_IN_COOKIE = "junction_admin_sign_in"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LINK_PATH = "/admin/link"


class LinkNotValid(Unauthorized):
    code = "admin_link_invalid"


@dataclass(frozen=True)
class OpenedSession:
    """A new session: the cookie's secret (never stored) and its CSRF token."""

    token: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class ConsoleSession:
    """The signed-in operator of a request."""

    subject: str
    csrf_token: str
    expires_at: datetime

    @property
    def principal(self) -> Principal:
        """The caller a session stands for: sessions are opened only for an admin of every
        tenant (app/core/permissions.py checks console routes against it like any caller)."""
        return Principal(
            sub=self.subject,
            tenants=frozenset({ALL_TENANTS}),
            roles=frozenset({ROLE_ADMIN}),
            jti=None,
            expires_at=self.expires_at,
        )

    def csrf_matches(self, presented: str | None) -> bool:
        return tokens_match(self.csrf_token, presented)


def tokens_match(expected: str, presented: str | None) -> bool:
    """A presented CSRF token against the one expected, in constant time (bytes, so a token
    with characters outside ASCII is a mismatch, not an error)."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


async def _forget_expired(session: AsyncSession, now: datetime) -> None:
    await session.execute(delete(AdminSession).where(AdminSession.expires_at <= now))


async def issue_link(session: AsyncSession, settings: Settings, *, subject: str) -> str:
    """A one-time sign-in secret for `subject`, valid ADMIN_LINK_TTL_S seconds."""
    now = utcnow()
    await _forget_expired(session, now)
    secret = new_secret()
    session.add(
        AdminSession(
            token_hash=digest(secret),
            kind=KIND_LINK,
            subject=subject,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.admin_link_ttl_s),
        )
    )
    await session.flush()
    return secret


def link_url(base_url: str, secret: str) -> str:
    return f"{base_url.rstrip('/')}{LINK_PATH}?token={secret}"


async def open_session(
    session: AsyncSession, settings: Settings, *, subject: str, not_after: datetime | None = None
) -> OpenedSession:
    now = utcnow()
    expires_at = now + timedelta(seconds=settings.admin_session_ttl_s)
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    opened = OpenedSession(token=new_secret(), csrf_token=new_secret(), expires_at=expires_at)
    session.add(
        AdminSession(
            token_hash=digest(opened.token),
            kind=KIND_SESSION,
            subject=subject,
            csrf_token=opened.csrf_token,
            created_at=now,
            expires_at=expires_at,
        )
    )
    await session.flush()
    return opened


async def redeem_link(session: AsyncSession, settings: Settings, secret: str) -> OpenedSession:
    """Spend a link and open its session; an unknown, spent or expired link is refused alike."""
    now = utcnow()
    spent = await session.execute(
        update(AdminSession)
        .where(
            AdminSession.token_hash == digest(secret),
            AdminSession.kind == KIND_LINK,
            AdminSession.used_at.is_(None),
            AdminSession.expires_at > now,
        )
        .values(used_at=now)
        .returning(AdminSession.subject)
    )
    subject = spent.scalar_one_or_none()
    if subject is None:
        raise LinkNotValid("this sign-in link is unknown, already used or expired")
    return await open_session(session, settings, subject=subject)


async def sign_in_with_bearer(session: AsyncSession, state: AppState, bearer: str) -> OpenedSession:
    """Open a session for an admin of every tenant, checked by the API's own code: the same
    verifier, the same revocation list, the rule of the all-tenant admin operations."""
    principal = await verified_caller(state, bearer)
    permissions.ADMIN_OF_ALL_TENANTS.check(principal)
    return await open_session(
        session, state.settings, subject=principal.sub, not_after=principal.expires_at
    )


async def find_session(session: AsyncSession, secret: str | None) -> ConsoleSession | None:
    if not secret:
        return None
    row = await session.scalar(
        select(AdminSession).where(
            AdminSession.token_hash == digest(secret),
            AdminSession.kind == KIND_SESSION,
            AdminSession.expires_at > utcnow(),
        )
    )
    if row is None or row.csrf_token is None:
        return None
    return ConsoleSession(subject=row.subject, csrf_token=row.csrf_token, expires_at=row.expires_at)


async def close_session(session: AsyncSession, secret: str) -> None:
    await session.execute(
        delete(AdminSession).where(
            AdminSession.token_hash == digest(secret), AdminSession.kind == KIND_SESSION
        )
    )

"""Encryption of the domain's secrets, each bound to its table, column, tenant and row."""

from __future__ import annotations

from app.core.crypto import Keyring, Sealed
from app.core.secret_fields import SecretField
from app.tokens.models import OAuthClient, OAuthConnection, OAuthState

CLIENT_SECRET = SecretField(OAuthClient.__tablename__, "client_secret", "client_secret_enc")
ACCESS_TOKEN = SecretField(OAuthConnection.__tablename__, "access_token", "access_token_enc")
REFRESH_TOKEN = SecretField(OAuthConnection.__tablename__, "refresh_token", "refresh_token_enc")
CODE_VERIFIER = SecretField(OAuthState.__tablename__, "code_verifier", "code_verifier_enc")


def seal_client_secret(keyring: Keyring, client: OAuthClient, secret: str) -> None:
    CLIENT_SECRET.seal(keyring, client, secret)


def open_client_secret(keyring: Keyring, client: OAuthClient) -> str:
    return CLIENT_SECRET.open(keyring, client.tenant_id, client.id, client.client_secret_enc)


def seal_access_token(keyring: Keyring, conn: OAuthConnection, token: str) -> None:
    ACCESS_TOKEN.seal(keyring, conn, token)


def open_access_token(keyring: Keyring, conn: OAuthConnection) -> str:
    return open_stored_access_token(keyring, conn.tenant_id, conn.id, conn.access_token_enc)


def open_stored_access_token(
    keyring: Keyring, tenant_id: str, connection_id: str, stored: str
) -> str:
    return ACCESS_TOKEN.open(keyring, tenant_id, connection_id, stored)


def sealed_access_token(
    keyring: Keyring, tenant_id: str, connection_id: str, stored: str
) -> Sealed:
    """The stored access token parsed but still encrypted: what the read cache keeps."""
    return ACCESS_TOKEN.sealed(keyring, tenant_id, connection_id, stored)


def seal_refresh_token(keyring: Keyring, conn: OAuthConnection, token: str) -> None:
    REFRESH_TOKEN.seal(keyring, conn, token)


def open_refresh_token(keyring: Keyring, conn: OAuthConnection) -> str | None:
    return REFRESH_TOKEN.open_row(keyring, conn)


def open_stored_refresh_token(
    keyring: Keyring, tenant_id: str, connection_id: str, stored: str
) -> str:
    return REFRESH_TOKEN.open(keyring, tenant_id, connection_id, stored)


def seal_code_verifier(keyring: Keyring, state: OAuthState, verifier: str) -> None:
    CODE_VERIFIER.seal(keyring, state, verifier)


def open_code_verifier(keyring: Keyring, state: OAuthState) -> str | None:
    return CODE_VERIFIER.open_row(keyring, state)

"""Encryption of the domain's secrets, each bound to its table, column, tenant and row."""

from __future__ import annotations

from app.core.crypto import Keyring, associated_data
from app.tokens.models import OAuthClient, OAuthConnection, OAuthState


def seal_client_secret(keyring: Keyring, client: OAuthClient, secret: str) -> None:
    aad = associated_data("oauth_clients", "client_secret", client.tenant_id, client.id)
    client.client_secret_enc = keyring.encrypt(secret, aad)


def open_client_secret(keyring: Keyring, client: OAuthClient) -> str:
    aad = associated_data("oauth_clients", "client_secret", client.tenant_id, client.id)
    return keyring.decrypt(client.client_secret_enc, aad)


def seal_access_token(keyring: Keyring, conn: OAuthConnection, token: str) -> None:
    aad = associated_data("oauth_connections", "access_token", conn.tenant_id, conn.id)
    conn.access_token_enc = keyring.encrypt(token, aad)


def open_access_token(keyring: Keyring, conn: OAuthConnection) -> str:
    return open_stored_access_token(keyring, conn.tenant_id, conn.id, conn.access_token_enc)


def open_stored_access_token(
    keyring: Keyring, tenant_id: str, connection_id: str, stored: str
) -> str:
    aad = associated_data("oauth_connections", "access_token", tenant_id, connection_id)
    return keyring.decrypt(stored, aad)


def seal_refresh_token(keyring: Keyring, conn: OAuthConnection, token: str) -> None:
    aad = associated_data("oauth_connections", "refresh_token", conn.tenant_id, conn.id)
    conn.refresh_token_enc = keyring.encrypt(token, aad)


def open_refresh_token(keyring: Keyring, conn: OAuthConnection) -> str | None:
    if conn.refresh_token_enc is None:
        return None
    aad = associated_data("oauth_connections", "refresh_token", conn.tenant_id, conn.id)
    return keyring.decrypt(conn.refresh_token_enc, aad)


def seal_code_verifier(keyring: Keyring, state: OAuthState, verifier: str) -> None:
    aad = associated_data("oauth_states", "code_verifier", state.tenant_id, state.id)
    state.code_verifier_enc = keyring.encrypt(verifier, aad)


def open_code_verifier(keyring: Keyring, state: OAuthState) -> str | None:
    if state.code_verifier_enc is None:
        return None
    aad = associated_data("oauth_states", "code_verifier", state.tenant_id, state.id)
    return keyring.decrypt(state.code_verifier_enc, aad)

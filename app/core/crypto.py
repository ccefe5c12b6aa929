"""Secrets at rest: an AES-256-GCM keyring with a key id per value and row-bound associated data.

A stored value reads `v1.<key id>.<base64url(nonce || ciphertext+tag)>`. The first key of
`ENCRYPTION_KEYS` encrypts; every key decrypts, so keys rotate by prepending a new one.
The associated data names the table, column, tenant and row, so a ciphertext copied to another
row (or another tenant, or another column) fails to decrypt instead of leaking.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.core.config import ConfigurationError

_VERSION = "v1"
_NONCE_BYTES = 12


class DecryptionError(Exception):
    """A stored secret could not be decrypted (tampered, moved, or its key is gone)."""


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))


def _parse_key(entry: str) -> tuple[str, bytes]:
    kid, sep, material = entry.partition(":")
    if not sep:
        material, kid = entry, ""
    try:
        key = _b64decode(material.strip())
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError("ENCRYPTION_KEYS: a key is not valid base64") from exc
    if len(key) != 32:
        raise ConfigurationError("ENCRYPTION_KEYS: each key must be 32 bytes (AES-256), base64")
    kid = kid.strip() or hashlib.sha256(key).hexdigest()[:8]
    if not kid.isalnum():
        raise ConfigurationError("ENCRYPTION_KEYS: a key id must be alphanumeric")
    return kid, key


def associated_data(table: str, column: str, tenant_id: str, row_id: str) -> bytes:
    return f"{table}\x1f{column}\x1f{tenant_id}\x1f{row_id}".encode()


@dataclass(frozen=True, slots=True)
class Sealed:
    """A stored value taken apart (its key, nonce, ciphertext and associated data): `open` only
    decrypts. What a cache may keep of a secret, since it is still encrypted: parsing the stored
    text is then done once, not on every read of it."""

    cipher: AESGCM
    nonce: bytes
    ciphertext: bytes
    aad: bytes

    def open(self) -> str:
        try:
            return self.cipher.decrypt(self.nonce, self.ciphertext, self.aad).decode()
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("secret failed authentication") from exc


class Keyring:
    def __init__(self, keys: str) -> None:
        entries = [entry.strip() for entry in keys.split(",") if entry.strip()]
        if not entries:
            raise ConfigurationError("ENCRYPTION_KEYS is empty")
        parsed = [_parse_key(entry) for entry in entries]
        self.primary_kid = parsed[0][0]
        self._ciphers = {kid: AESGCM(key) for kid, key in parsed}
        if len(self._ciphers) != len(parsed):
            raise ConfigurationError("ENCRYPTION_KEYS: two keys share a key id")

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id that decrypts, the primary first."""
        return tuple(self._ciphers)

    @staticmethod
    def generate_key() -> str:
        return base64.urlsafe_b64encode(os.urandom(32)).decode()

    def encrypt(self, plaintext: str, aad: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.primary_kid].encrypt(nonce, plaintext.encode(), aad)
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}.{self.primary_kid}.{body}"

    def decrypt(self, stored: str, aad: bytes) -> str:
        return self.sealed(stored, aad).open()

    def sealed(self, stored: str, aad: bytes) -> Sealed:
        """A stored value, parsed but still encrypted (`DecryptionError` if it cannot be)."""
        try:
            version, kid, body = stored.split(".", 2)
        except ValueError as exc:
            raise DecryptionError("malformed secret") from exc
        cipher = self._ciphers.get(kid)
        if version != _VERSION or cipher is None:
            raise DecryptionError("secret written under an unknown key")
        try:
            raw = _b64decode(body)
        except (ValueError, binascii.Error) as exc:
            raise DecryptionError("secret failed authentication") from exc
        return Sealed(cipher, raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)

    def key_id(self, stored: str) -> str:
        return stored.split(".", 2)[1]

    def knows(self, stored: str) -> bool:
        """Whether the key a stored value was written under is in the keyring."""
        parts = stored.split(".", 2)
        return len(parts) == 3 and parts[0] == _VERSION and parts[1] in self._ciphers


def mask(secret: str | None) -> str | None:
    """Show only the last four characters, and nothing of a short secret."""
    if secret is None:
        return None
    if len(secret) <= 8:
        return "****"
    return "****" + secret[-4:]

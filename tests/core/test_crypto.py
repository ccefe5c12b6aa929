"""The AES-256-GCM keyring: round trip, tamper detection, row binding, key rotation."""

from __future__ import annotations

import pytest

from app.core.config import ConfigurationError
from app.core.crypto import DecryptionError, Keyring, associated_data, mask

OLD_KEY = "old:" + Keyring.generate_key()
NEW_KEY = "new:" + Keyring.generate_key()
ROW_A = associated_data("oauth_connections", "access_token_enc", "tenant-a", "row-1")


def test_round_trip_returns_the_plaintext() -> None:
    keyring = Keyring(NEW_KEY)
    stored = keyring.encrypt("s3cret-value", ROW_A)
    assert "s3cret-value" not in stored
    assert keyring.decrypt(stored, ROW_A) == "s3cret-value"


def test_each_value_records_the_key_id_that_wrote_it() -> None:
    keyring = Keyring(NEW_KEY)
    assert keyring.key_id(keyring.encrypt("x", ROW_A)) == "new"


def test_a_flipped_byte_fails_to_decrypt() -> None:
    keyring = Keyring(NEW_KEY)
    stored = keyring.encrypt("s3cret-value", ROW_A)
    prefix, body = stored.rsplit(".", 1)
    flipped_char = "A" if body[20] != "A" else "B"
    tampered = f"{prefix}.{body[:20]}{flipped_char}{body[21:]}"
    with pytest.raises(DecryptionError):
        keyring.decrypt(tampered, ROW_A)


def test_a_value_copied_to_another_row_fails_to_decrypt() -> None:
    keyring = Keyring(NEW_KEY)
    stored = keyring.encrypt("s3cret-value", ROW_A)
    other_row = associated_data("oauth_connections", "access_token_enc", "tenant-a", "row-2")
    with pytest.raises(DecryptionError):
        keyring.decrypt(stored, other_row)


def test_a_value_copied_to_another_tenant_fails_to_decrypt() -> None:
    keyring = Keyring(NEW_KEY)
    stored = keyring.encrypt("s3cret-value", ROW_A)
    other_tenant = associated_data("oauth_connections", "access_token_enc", "tenant-b", "row-1")
    with pytest.raises(DecryptionError):
        keyring.decrypt(stored, other_tenant)


def test_a_value_written_under_an_old_key_reads_after_a_new_primary_is_added() -> None:
    stored = Keyring(OLD_KEY).encrypt("s3cret-value", ROW_A)
    rotated = Keyring(f"{NEW_KEY},{OLD_KEY}")
    assert rotated.decrypt(stored, ROW_A) == "s3cret-value"
    assert rotated.key_id(rotated.encrypt("fresh", ROW_A)) == "new"


def test_a_value_whose_key_was_removed_fails_clearly() -> None:
    stored = Keyring(OLD_KEY).encrypt("s3cret-value", ROW_A)
    with pytest.raises(DecryptionError, match="unknown key"):
        Keyring(NEW_KEY).decrypt(stored, ROW_A)


def test_a_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        Keyring("short:c2hvcnQ=")


def test_mask_shows_only_the_last_four_characters() -> None:
    assert mask("sk_live_1234567890abcd") == "****abcd"
    assert mask("tiny") == "****"
    assert mask(None) is None

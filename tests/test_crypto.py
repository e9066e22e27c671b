"""Secrets at rest: rotation, wrong or missing keys, tampering."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bank_sync_bridge.crypto import (
    CryptoError,
    SecretBox,
    SecretKeyError,
    generate_key,
    key_from_secret,
    key_id,
)
from bank_sync_bridge.errors import BankSyncError

SECRET = "client-secret-Ünïcode-42"


def test_round_trip_and_no_plaintext_in_the_stored_value() -> None:
    box = SecretBox.from_config(generate_key())
    token = box.encrypt(SECRET)
    assert SECRET not in token
    assert token.startswith(f"bsb1:{box.primary_key_id}:")
    assert token.isascii()
    assert box.decrypt(token) == SECRET
    # Fernet is randomised: the same secret never gives the same stored value twice.
    assert box.encrypt(SECRET) != token


def test_rotation_old_keys_decrypt_new_key_encrypts() -> None:
    old, new = generate_key(), generate_key()
    old_box = SecretBox.from_config(old)
    stored = old_box.encrypt(SECRET)

    rotated_box = SecretBox.from_config(f"{new}, {old}")
    assert rotated_box.key_ids == (key_id(new), key_id(old))
    assert rotated_box.decrypt(stored) == SECRET
    assert rotated_box.needs_rotation(stored)
    fresh = rotated_box.encrypt("another")
    assert rotated_box.key_id_of(fresh) == key_id(new)

    rewritten = rotated_box.rotate(stored)
    assert rotated_box.key_id_of(rewritten) == key_id(new)
    assert not rotated_box.needs_rotation(rewritten)
    assert rotated_box.rotate(rewritten) == rewritten

    # Once the old key is dropped, only the rewritten value is still readable.
    new_only = SecretBox.from_config(new)
    assert new_only.decrypt(rewritten) == SECRET
    with pytest.raises(SecretKeyError, match=f"key {key_id(old)}, which is not in the"):
        new_only.decrypt(stored)


def test_wrong_key_with_the_same_id_is_reported_as_altered() -> None:
    box = SecretBox.from_config(generate_key())
    other = SecretBox.from_config(generate_key())
    token = box.encrypt(SECRET)
    # Forge the other key's id onto the value: authentication still refuses it.
    forged = token.replace(box.primary_key_id, other.primary_key_id, 1)
    with pytest.raises(SecretKeyError, match="corrupted or was altered"):
        other.decrypt(forged)


@pytest.mark.parametrize("position", [20, 40, -5])
def test_tampered_value_is_refused_never_garbage(position: int) -> None:
    box = SecretBox.from_config(generate_key())
    token = box.encrypt(SECRET)
    flipped = "A" if token[position] != "A" else "B"
    tampered = token[:position] + flipped + token[position + 1 :]
    with pytest.raises(SecretKeyError, match="corrupted or was altered"):
        box.decrypt(tampered)
    with pytest.raises(SecretKeyError):
        box.rotate(tampered)


@pytest.mark.parametrize(
    "value", ["", "plain-text-password", "bsb1:zz:abc", "bsb1:0123abcd:", "gAAAAA-fernet-only"]
)
def test_values_that_are_not_encrypted_secrets(value: str) -> None:
    box = SecretBox.from_config(generate_key())
    with pytest.raises(SecretKeyError) as info:
        box.decrypt(value)
    assert "enter the secret again" in str(info.value) or "empty" in str(info.value)


def test_missing_or_invalid_keys_give_a_clear_error_without_echoing_them() -> None:
    for empty in ("", "  , ,", None, []):
        with pytest.raises(SecretKeyError, match="No encryption key is configured"):
            SecretBox.from_config(empty)
    typo = "my-secret-passphrase-typed-by-hand"
    with pytest.raises(SecretKeyError, match="key number 2") as info:
        SecretBox.from_config(f"{generate_key()},{typo}")
    assert typo not in str(info.value)
    assert isinstance(info.value, BankSyncError)
    assert CryptoError is SecretKeyError


def test_repr_shows_key_ids_only() -> None:
    key = generate_key()
    box = SecretBox([key])
    assert key not in repr(box)
    assert box.primary_key_id in repr(box)


def test_duplicate_keys_are_tolerated() -> None:
    key = generate_key()
    box = SecretBox.from_config(f"{key}\n{key}")
    assert box.key_ids == (key_id(key),)


def test_key_from_secret_is_stable_and_separated_by_context() -> None:
    secret = "5b0e2c1a-8d7f-4c39-9a61-2f4e8b7d3c10"
    first = key_from_secret(secret)
    assert first == key_from_secret(secret)
    assert first != key_from_secret(secret, context="webhooks")
    box = SecretBox.from_config(first)
    assert SecretBox.from_config(key_from_secret(secret)).decrypt(box.encrypt("x")) == "x"
    with pytest.raises(SecretKeyError, match="too short"):
        key_from_secret("short")


def test_command_line_generates_a_usable_key() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bank_sync_bridge.crypto"],
        capture_output=True,
        text=True,
        check=True,
    )
    key = completed.stdout.strip()
    assert SecretBox.from_config(key).primary_key_id == key_id(key)

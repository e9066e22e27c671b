"""Encryption of secrets at rest (client secrets, aggregator tokens, user passwords).

Design:

- A **keyring** is a list of keys, newest first, written as text separated by commas (or
  spaces / new lines): ``"<newest>,<previous>,..."``. This is what an administrator puts in
  Odoo's configuration file or the service's environment. New secrets are always encrypted
  with the newest key; older keys only decrypt, so a rotation is: put a new key first, re-save
  (or :meth:`SecretBox.rotate`) the stored values, then drop the old key.
- Each key is a Fernet key (32 random bytes, URL-safe base64; :func:`generate_key`). Fernet
  (AES-128-CBC + HMAC-SHA256, from ``cryptography``, available in Odoo 18's pinned 3.4.8) is
  authenticated: a wrong key or a tampered value is *detected*, never decrypted to garbage.
  Keys are random rather than derived from passphrases on purpose: a passphrase would need a
  slow KDF on every process start and a stored salt, and people choose weak ones. When a
  deployment already has a long random secret (e.g. a UUID generated at install), use
  :func:`key_from_secret`, a fast HKDF that is only sound for such high-entropy input.
- A stored value reads ``bsb1:<key id>:<Fernet token>``. The key id (8 hex digits of a hash of
  the key, which reveals nothing usable about it) says which key made the value, so a missing
  key is reported as such instead of as "corrupted", and rotation knows what to redo.

Every failure raises :class:`SecretKeyError` with a message an administrator can act on; no
message ever contains a key or a plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import sys
from collections.abc import Iterable, Sequence

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import SecretKeyError

#: Prefix (and format version) of every encrypted value.
FORMAT_PREFIX = "bsb1"

_KEY_SEPARATORS = re.compile(r"[\s,;]+")


#: Name the Odoo addon catches; the same class (defined with the rest of the tree in ``errors``).
CryptoError = SecretKeyError


def generate_key() -> str:
    """A new random key, as text to put first in the keyring."""
    return Fernet.generate_key().decode("ascii")


def key_from_secret(secret: str | bytes, *, context: str = "bank_sync_bridge secrets") -> str:
    """A keyring key derived (HKDF-SHA256) from an existing long random secret.

    Only for high-entropy input such as a generated UUID or token: HKDF is fast, so a human
    passphrase would be open to guessing. ``context`` separates keys derived from the same
    secret for different uses.
    """
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    if len(raw) < 16:
        raise SecretKeyError(
            "The secret to derive an encryption key from is too short (16 characters at least)",
            code="short_secret",
        )
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=context.encode("utf-8"),
    ).derive(raw)
    return base64.urlsafe_b64encode(derived).decode("ascii")


def key_id(key: str) -> str:
    """The short public id of ``key`` written into the values it encrypts."""
    return _key_id(_decode_key(key, position=1))


def _key_id(raw: bytes) -> str:
    return hashlib.sha256(b"bank_sync_bridge key id\0" + raw).hexdigest()[:8]


def _decode_key(key: str, *, position: int) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 32:
        # Never echo the key itself: it may be a real secret typed in the wrong place.
        raise SecretKeyError(
            f"Encryption key number {position} of the keyring is not a valid key "
            "(expected 44 URL-safe base64 characters, as made by "
            "'python3 -m bank_sync_bridge.crypto')",
            code="invalid_key",
        )
    return raw


def split_keys(text: str | Iterable[str] | None) -> list[str]:
    """Keys from configuration text (comma, semicolon or whitespace separated) or a list."""
    if text is None:
        return []
    parts = _KEY_SEPARATORS.split(text) if isinstance(text, str) else list(text)
    return [part.strip() for part in parts if part and part.strip()]


class SecretBox:
    """Encrypts with the newest key of a keyring, decrypts with any of them.

    Build it with :meth:`from_config` from the configured text, or directly from a sequence of
    keys, newest first.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        keys = split_keys(keys)
        if not keys:
            raise SecretKeyError(
                "No encryption key is configured, so secrets can be neither stored nor read",
                code="no_key",
            )
        self._fernets: dict[str, Fernet] = {}
        for position, key in enumerate(keys, start=1):
            kid = _key_id(_decode_key(key, position=position))
            # A key listed twice (copy-paste during a rotation) is harmless: keep the first.
            self._fernets.setdefault(kid, Fernet(key.encode("ascii")))
        self._primary = next(iter(self._fernets))

    @classmethod
    def from_config(cls, text: str | Iterable[str] | None) -> SecretBox:
        """Keyring from configuration text, newest key first (see the module docstring)."""
        return cls(split_keys(text))

    def __repr__(self) -> str:  # key ids only: never the keys
        return f"SecretBox(key_ids={list(self._fernets)!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of the keys, newest first."""
        return tuple(self._fernets)

    @property
    def primary_key_id(self) -> str:
        """Id of the key that encrypts new values."""
        return self._primary

    def encrypt(self, plaintext: str) -> str:
        """Encrypt ``plaintext`` with the newest key; the result is ASCII text."""
        if not isinstance(plaintext, str):
            raise TypeError("Only text secrets can be encrypted")
        token = self._fernets[self._primary].encrypt(plaintext.encode("utf-8"))
        return f"{FORMAT_PREFIX}:{self._primary}:{token.decode('ascii')}"

    def decrypt(self, token: str) -> str:
        """The plaintext of a value made by :meth:`encrypt` with any key of the keyring."""
        kid, fernet_token = self._split(token)
        fernet = self._fernets.get(kid)
        if fernet is None:
            raise SecretKeyError(
                f"This secret was encrypted with key {kid}, which is not in the configured "
                f"keyring ({', '.join(self._fernets)}): put that key back in the keyring, or "
                "enter the secret again",
                code="unknown_key",
            )
        try:
            return fernet.decrypt(fernet_token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                f"This secret (key {kid}) is corrupted or was altered: it cannot be "
                "decrypted; enter the secret again",
                code="corrupted",
            ) from None

    def key_id_of(self, token: str) -> str:
        """Id of the key that encrypted ``token`` (whether or not it is in this keyring)."""
        return self._split(token)[0]

    def needs_rotation(self, token: str) -> bool:
        """True when ``token`` was not made with the newest key."""
        return self.key_id_of(token) != self._primary

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the newest key (unchanged if it already is)."""
        if not self.needs_rotation(token):
            # Still decrypt: a rotation pass must notice a corrupted value, not skip it.
            self.decrypt(token)
            return token
        return self.encrypt(self.decrypt(token))

    @staticmethod
    def _split(token: str) -> tuple[str, str]:
        if not isinstance(token, str) or not token:
            raise SecretKeyError(
                "There is no encrypted secret to read (the value is empty)", code="empty"
            )
        prefix, _, rest = token.partition(":")
        kid, _, fernet_token = rest.partition(":")
        if prefix != FORMAT_PREFIX or not re.fullmatch(r"[0-9a-f]{8}", kid) or not fernet_token:
            raise SecretKeyError(
                "This value is not an encrypted secret (it may have been stored in clear text "
                "or cut short); enter the secret again",
                code="not_encrypted",
            )
        return kid, fernet_token


__all__ = [
    "FORMAT_PREFIX",
    "CryptoError",
    "SecretBox",
    "SecretKeyError",
    "generate_key",
    "key_from_secret",
    "key_id",
    "split_keys",
]


def main() -> int:
    """``python3 -m bank_sync_bridge.crypto``: write a new key on standard output."""
    sys.stdout.write(generate_key() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

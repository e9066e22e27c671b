"""Where the operator's encryption keys come from (the box is :mod:`bank_sync_bridge.crypto`).

Tenant secrets (needed in clear to verify HMAC signatures), the aggregator credentials and the
aggregator users' tokens are stored encrypted. Keys come, in this order, from the
``--keys-file`` option, the ``BANK_SYNC_SERVICE_KEYS`` environment variable (comma-separated),
or, for a SQLite store only, a key file created next to the database on first start. The first
key encrypts; every key decrypts, so a key is rotated by putting a new one in front and
re-encrypting (``python -m bank_sync_bridge.service rotate-keys``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..crypto import SecretBox, SecretKeyError, generate_key, split_keys

#: Environment variable holding the operator's keys, newest first, comma-separated.
KEYS_ENV = "BANK_SYNC_SERVICE_KEYS"


def load_keys(
    *,
    keys_file: str | None,
    environ: Mapping[str, str],
    sqlite_path: str | None,
) -> list[str]:
    """The operator's keys, newest first (see the module docstring for where they come from).

    With a SQLite store and no key given, a key file ``<database>.key`` (mode 0600) is
    created on first use so that the one-command start works; keep it out of the database's
    backups, or the encryption protects nothing.
    """
    if keys_file:
        return _read_keys(Path(keys_file))
    if environ.get(KEYS_ENV):
        return split_keys(environ[KEYS_ENV])
    if sqlite_path and sqlite_path != ":memory:":
        path = Path(sqlite_path + ".key")
        if not path.exists():
            # O_EXCL: two processes starting together cannot both write a different key.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return _read_keys(path)
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_key() + "\n")
        return _read_keys(path)
    raise SecretKeyError(
        f"No encryption key: set {KEYS_ENV} (comma-separated, newest first) or --keys-file"
    )


def _read_keys(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SecretKeyError(f"Cannot read the key file {path}: {exc.strerror}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not keys:
        raise SecretKeyError(f"The key file {path} holds no key")
    return keys


__all__ = ["KEYS_ENV", "SecretBox", "SecretKeyError", "load_keys"]

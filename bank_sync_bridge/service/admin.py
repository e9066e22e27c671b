"""Operator actions on the service database: tenants and the aggregator configuration.

Used by the command line (``python -m bank_sync_bridge.service tenant add ...``) and by tests.
Secrets are stored encrypted with the operator's keys (:mod:`.keys`); a tenant's secret is
returned once, at registration, and never shown again.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..crypto import SecretBox
from .clock import SYSTEM_CLOCK, ServiceClock
from .store import Store

#: Aggregator kinds the service can hold a contract for.
AGGREGATOR_KINDS = ("sandbox", "bridgeapi", "linxo")

#: ``settings`` key of the aggregator configuration.
AGGREGATOR_SETTING = "aggregator"


@dataclass(frozen=True)
class TenantCredentials:
    """What the operator hands to the tenant's Odoo administrator, once."""

    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class TenantInfo:
    """A tenant as listed to the operator (no secret)."""

    client_id: str
    name: str
    created_at: float
    revoked_at: float | None
    callback_url: str | None


@dataclass(frozen=True)
class AggregatorConfig:
    """The operator's aggregator contract: kind, URL, credentials and webhook secrets."""

    kind: str
    base_url: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)


#: Used until the operator configures an aggregator: the built-in demo bank.
DEFAULT_AGGREGATOR = AggregatorConfig(kind="sandbox")


def register_tenant(
    store: Store, box: SecretBox, name: str, *, clock: ServiceClock = SYSTEM_CLOCK
) -> TenantCredentials:
    """Create a tenant; the returned secret is the only time it is shown."""
    name = name.strip()
    if not name:
        raise ValueError("A tenant needs a name (the Odoo database or client it serves)")
    client_id = "bst_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO tenants (client_id, name, secret_enc, created_at) VALUES (?, ?, ?, ?)",
            (client_id, name, box.encrypt(secret), clock.timestamp()),
        )
    return TenantCredentials(client_id, secret)


def rotate_tenant_secret(store: Store, box: SecretBox, client_id: str) -> TenantCredentials:
    """Give an active tenant a new secret (the old one stops working at once)."""
    secret = secrets.token_urlsafe(32)
    with store.transaction() as tx:
        changed = tx.execute(
            "UPDATE tenants SET secret_enc = ? WHERE client_id = ? AND revoked_at IS NULL",
            (box.encrypt(secret), client_id),
        )
    if not changed:
        raise LookupError(f"No active tenant with client id {client_id!r}")
    return TenantCredentials(client_id, secret)


def revoke_tenant(store: Store, client_id: str, *, clock: ServiceClock = SYSTEM_CLOCK) -> None:
    """Refuse every further call of this tenant (its data stays for the operator)."""
    with store.transaction() as tx:
        changed = tx.execute(
            "UPDATE tenants SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",
            (clock.timestamp(), client_id),
        )
    if not changed:
        raise LookupError(f"No active tenant with client id {client_id!r}")


def list_tenants(store: Store) -> list[TenantInfo]:
    """Every tenant, oldest first."""
    with store.transaction(write=False) as tx:
        rows = tx.all(
            "SELECT client_id, name, created_at, revoked_at, callback_url FROM tenants ORDER BY id"
        )
    return [TenantInfo(*row) for row in rows]


def set_aggregator(
    store: Store, box: SecretBox, config: AggregatorConfig, *, clock: ServiceClock = SYSTEM_CLOCK
) -> None:
    """Store the operator's aggregator configuration (secrets encrypted)."""
    if config.kind not in AGGREGATOR_KINDS:
        raise ValueError(
            f"Unknown aggregator kind {config.kind!r}; choose one of {', '.join(AGGREGATOR_KINDS)}"
        )
    value = json.dumps(
        {
            "kind": config.kind,
            "base_url": config.base_url,
            "options": dict(config.options),
            "credentials_enc": box.encrypt(json.dumps(dict(config.credentials))),
            "webhook_secrets_enc": box.encrypt(json.dumps(list(config.webhook_secrets))),
        }
    )
    now = clock.timestamp()
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (AGGREGATOR_SETTING, value, now),
        )


def get_aggregator(store: Store, box: SecretBox) -> AggregatorConfig:
    """The operator's aggregator configuration (the sandbox until one is set)."""
    with store.transaction(write=False) as tx:
        row = tx.one("SELECT value FROM settings WHERE key = ?", (AGGREGATOR_SETTING,))
    if row is None:
        return DEFAULT_AGGREGATOR
    data = json.loads(row[0])
    return AggregatorConfig(
        kind=data["kind"],
        base_url=data.get("base_url"),
        credentials=json.loads(box.decrypt(data["credentials_enc"])),
        options=data.get("options") or {},
        webhook_secrets=tuple(json.loads(box.decrypt(data["webhook_secrets_enc"]))),
    )


def rotate_keys(store: Store, box: SecretBox) -> int:
    """Re-encrypt every stored secret with the newest key; returns how many were rewritten.

    Run after putting a new key in front of the list; the old key can then be removed.
    """
    count = 0
    with store.transaction() as tx:
        for tenant_id, secret_enc in tx.all("SELECT id, secret_enc FROM tenants"):
            tx.execute(
                "UPDATE tenants SET secret_enc = ? WHERE id = ?",
                (box.rotate(secret_enc), tenant_id),
            )
            count += 1
        for key, value_enc in tx.all("SELECT key, value_enc FROM provider_tokens"):
            tx.execute(
                "UPDATE provider_tokens SET value_enc = ? WHERE key = ?",
                (box.rotate(value_enc), key),
            )
            count += 1
        row = tx.one("SELECT value FROM settings WHERE key = ?", (AGGREGATOR_SETTING,))
        if row is not None:
            data = json.loads(row[0])
            for name in ("credentials_enc", "webhook_secrets_enc"):
                data[name] = box.rotate(data[name])
                count += 1
            tx.execute(
                "UPDATE settings SET value = ? WHERE key = ?",
                (json.dumps(data), AGGREGATOR_SETTING),
            )
    return count


def parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``["name=value", ...]`` from the command line as a dict (clear error otherwise)."""
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"Expected NAME=VALUE, got {pair.split('=')[0]!r}...")
        result[name.strip()] = value
    return result

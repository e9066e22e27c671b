"""The bridge service: one operator's aggregator contract shared by many Odoo databases.

Runs in its own environment (``pip install 'bank-sync-bridge[service]'``) and is never imported
by the Odoo addon, which talks to it through
:class:`~bank_sync_bridge.providers.bridge_service.BridgeServiceProvider`. Start it with
``python -m bank_sync_bridge.service`` (see :mod:`.cli`); the pieces are :mod:`.store` (SQLite
or PostgreSQL, self-migrating), :mod:`.app` (the HTTP API), :mod:`.server` (standard-library
HTTP server and callback delivery), :mod:`.admin` (tenants and aggregator settings) and
:mod:`.openapi`.
"""

from ..crypto import SecretBox
from .admin import (
    AggregatorConfig,
    TenantCredentials,
    register_tenant,
    revoke_tenant,
    set_aggregator,
)
from .app import ServiceApp, ServiceSettings
from .server import ServiceServer
from .store import Store

__all__ = [
    "AggregatorConfig",
    "SecretBox",
    "ServiceApp",
    "ServiceServer",
    "ServiceSettings",
    "Store",
    "TenantCredentials",
    "register_tenant",
    "revoke_tenant",
    "set_aggregator",
]

"""The bridge service: one operator's aggregator contract shared by many Odoo databases.

Runs in its own environment (``pip install 'bank-sync-bridge[service]'``) and is never imported
by the Odoo addon, which talks to it through
:class:`~bank_sync_bridge.providers.bridge_service.BridgeServiceProvider`. Start it with
``python -m bank_sync_bridge.service`` (see :mod:`.cli`); the pieces are :mod:`.store` (SQLite
or PostgreSQL, self-migrating), :mod:`.app` (the application, wiring :mod:`.routes` (the HTTP
API), :mod:`.tenancy` (authentication, companies, rate limits, ownership), :mod:`.delivery`
(events, routed and posted to :mod:`.callbacks`) and :mod:`.provider_pool`), :mod:`.server`
(standard-library HTTP server and the delivery loop), :mod:`.admin` (tenants and aggregator
settings), :mod:`.settings` and :mod:`.openapi`.
"""

from ..crypto import SecretBox
from .admin import (
    AggregatorConfig,
    TenantCredentials,
    register_tenant,
    revoke_tenant,
    set_aggregator,
)
from .app import ServiceApp
from .server import ServiceServer
from .settings import ServiceSettings
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

"""Aggregator clients behind one :class:`~bank_sync_bridge.providers.base.Provider` protocol."""

from __future__ import annotations

import importlib
from typing import Any

from .base import MemoryTokenStore, Provider, ProviderConfig, TokenStore

#: kind -> "module:Class", imported lazily so that a missing optional piece never breaks others.
PROVIDER_CLASSES: dict[str, str] = {
    "sandbox": "bank_sync_bridge.providers.sandbox:SandboxProvider",
    "bridgeapi": "bank_sync_bridge.providers.bridgeapi:BridgeProvider",
    "linxo": "bank_sync_bridge.providers.linxo:LinxoProvider",
    "bridge_service": "bank_sync_bridge.providers.bridge_service:BridgeServiceProvider",
}


def get_provider(kind: str, config: ProviderConfig, **kwargs: Any) -> Provider:
    """Build the provider of ``kind`` for ``config`` (extra keyword arguments such as
    ``clock``, ``sleep``, ``token_store`` or ``session`` are passed to its constructor)."""
    try:
        target = PROVIDER_CLASSES[kind]
    except KeyError:
        raise ValueError(f"Unknown aggregator kind: {kind!r}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(config, **kwargs)


__all__ = [
    "PROVIDER_CLASSES",
    "MemoryTokenStore",
    "Provider",
    "ProviderConfig",
    "TokenStore",
    "get_provider",
]

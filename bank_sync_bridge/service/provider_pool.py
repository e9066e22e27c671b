"""The operator's aggregator as the service uses it: its configuration (cached), one provider
per aggregator user (pooled, each called by one thread at a time), the aggregator users'
tokens (in the database, encrypted), and what a tenant is told when the aggregator fails."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..crypto import SecretBox
from ..errors import (
    AccessDenied,
    ActionRequired,
    AuthenticationError,
    BankSyncError,
    InvalidRequest,
    NotFound,
    RateLimited,
    SignatureVerificationError,
)
from ..providers import ProviderConfig, get_provider
from ..providers.base import Provider
from . import admin
from .clock import ServiceClock
from .messages import ApiError
from .settings import ServiceSettings
from .store import Store

#: Providers kept in memory (one per aggregator user recently served).
PROVIDER_CACHE_SIZE = 256

#: Path of the sandbox's hosted connect page when the operator runs the sandbox.
SANDBOX_PAGE = "/sandbox/connect"


class DbTokenStore:
    """A :class:`~bank_sync_bridge.providers.base.TokenStore` in the service database,
    encrypted, so that every service process shares the aggregator users' tokens."""

    def __init__(self, store: Store, box: SecretBox, *, clock: ServiceClock) -> None:
        self._store = store
        self._box = box
        self._clock = clock

    def get(self, key: str) -> Mapping[str, Any] | None:
        """The cached token data for ``key``, or None."""
        with self._store.transaction(write=False) as tx:
            row = tx.one("SELECT value_enc FROM provider_tokens WHERE key = ?", (key,))
        return json.loads(self._box.decrypt(row[0])) if row else None

    def set(self, key: str, value: Mapping[str, Any]) -> None:
        """Remember token data for ``key``."""
        encrypted = self._box.encrypt(json.dumps(dict(value), default=str))
        with self._store.transaction() as tx:
            tx.execute(
                "INSERT INTO provider_tokens (key, value_enc, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value_enc = excluded.value_enc, "
                "updated_at = excluded.updated_at",
                (key, encrypted, self._clock.timestamp()),
            )


class SerializedProvider:
    """A provider whose method calls hold its lock (see :meth:`ProviderPool.serialized`)."""

    def __init__(self, provider: Provider, lock: threading.Lock) -> None:
        self.provider = provider
        self.lock = lock

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.provider, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                return method(*args, **kwargs)

        return call


class ProviderPool:
    """Providers of the operator's aggregator, one per aggregator user, built from its
    configuration (read from the database, cached for ``config_ttl`` seconds)."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        settings: ServiceSettings,
        *,
        provider_kwargs: Mapping[str, Any] | None = None,
        clock: ServiceClock,
    ) -> None:
        self.store = store
        self.clock = clock
        self.box = box
        self.settings = settings
        self.provider_kwargs = dict(provider_kwargs or {})
        self.token_store = DbTokenStore(store, box, clock=clock)
        #: The URL browsers reach the service at: the sandbox's hosted page lives there.
        self.public_url = settings.public_url
        self._providers: OrderedDict[str, tuple[Provider, threading.Lock]] = OrderedDict()
        self._providers_config: admin.AggregatorConfig | None = None
        self._providers_lock = threading.Lock()
        self._config_lock = threading.Lock()
        self._config: tuple[float, admin.AggregatorConfig] | None = None

    def config(self) -> admin.AggregatorConfig:
        """The operator's aggregator configuration, cached for ``config_ttl`` seconds."""
        now = self.clock.monotonic()
        with self._config_lock:
            if self._config is None or now - self._config[0] > self.settings.config_ttl:
                self._config = (now, admin.get_aggregator(self.store, self.box))
            return self._config[1]

    def forget_config(self) -> None:
        """Read the configuration again on next use (the operator just changed it)."""
        with self._config_lock:
            self._config = None

    def provider(self, user_ref: str) -> Provider:
        """A provider of the operator's aggregator bound to the aggregator user ``user_ref``.

        Providers are kept (a few hundred, least recently used dropped) because they hold
        token caches, HTTP sessions and, for the sandbox, generated data; the pool empties
        when the operator changes the aggregator configuration.
        """
        return self._entry(user_ref)[0]

    def serialized(self, user_ref: str) -> Any:
        """``user_ref``'s provider, each call serialised (providers need not be thread-safe,
        and one company's calls never need to run in parallel)."""
        return SerializedProvider(*self._entry(user_ref))

    def _entry(self, user_ref: str) -> tuple[Provider, threading.Lock]:
        config = self.config()
        with self._providers_lock:
            if config != self._providers_config:
                self._providers.clear()
                self._providers_config = config
            entry = self._providers.get(user_ref)
            if entry is not None:
                self._providers.move_to_end(user_ref)
                return entry
        options = dict(config.options)
        if config.kind == "sandbox" and "hosted_url" not in options and self.public_url:
            # The sandbox's hosted page is served by the service itself.
            options["hosted_url"] = self.public_url.rstrip("/") + SANDBOX_PAGE
        provider = get_provider(
            config.kind,
            ProviderConfig(
                user_ref=user_ref,
                base_url=config.base_url,
                credentials=config.credentials,
                options=options,
            ),
            token_store=self.token_store,
            **self.provider_kwargs,
        )
        with self._providers_lock:
            entry = self._providers.setdefault(user_ref, (provider, threading.Lock()))
            while len(self._providers) > PROVIDER_CACHE_SIZE:
                self._providers.popitem(last=False)
        return entry


def provider_error_answer(exc: BankSyncError) -> ApiError:
    """What the tenant is told when the aggregator fails (never the operator's secrets)."""
    code = exc.code
    if isinstance(exc, ActionRequired):
        return ApiError(409, "action_required", exc.message, code=code, reason=exc.reason.value)
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", exc.message, code=code)
    if isinstance(exc, InvalidRequest | SignatureVerificationError):
        return ApiError(400, "invalid_request", exc.message, code=code)
    if isinstance(exc, RateLimited):
        return ApiError(
            429,
            "rate_limited",
            "The aggregator's rate limit was reached; retry later",
            code=code,
            retry_after=max(1, int(exc.retry_after or 60)),
        )
    if isinstance(exc, AuthenticationError | AccessDenied):
        # The operator's contract is refused: the tenant cannot fix it, the operator can.
        return ApiError(
            502,
            "aggregator_refused",
            "The aggregator refused the service's credentials; the operator must check them",
            code=code,
        )
    return ApiError(503, "provider_unavailable", exc.message, code=code)


__all__ = [
    "PROVIDER_CACHE_SIZE",
    "SANDBOX_PAGE",
    "DbTokenStore",
    "ProviderPool",
    "SerializedProvider",
    "provider_error_answer",
]

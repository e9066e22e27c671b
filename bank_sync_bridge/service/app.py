"""The bridge service's application: its parts, wired.

:class:`ServiceApp` is the one object the server, the command line and the tests hold; the work
is done by its parts, each in its module:

- :mod:`.routes`: the HTTP API, its handlers and the reading of requests;
- :mod:`.tenancy`: authentication, tenants and their companies, rate limits, who owns which
  connection;
- :mod:`.delivery`: the aggregator's events, stored, routed, polled and posted to callbacks;
- :mod:`.provider_pool`: the operator's aggregator configuration and one provider per
  aggregator user.

Isolation: the service records which aggregator user (tenant + company) owns each connection
and account when it learns of them (connect completed, connections or accounts listed) and
checks that ownership on every call naming one; an id owned by someone else is "not found".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from ..crypto import SecretBox
from ..model import WebhookEvent
from ..providers.base import Provider
from . import admin
from .callbacks import Resolver, system_resolver
from .clock import SYSTEM_CLOCK, ServiceClock
from .delivery import EventDelivery
from .logs import LOGGER_NAME
from .messages import ApiError, Request, Response
from .provider_pool import ProviderPool
from .routes import Router
from .settings import ServiceSettings
from .store import Store
from .tenancy import Caller, Tenancy, Tenant


class ServiceApp:
    """The bridge service's request handling and event delivery, for one store.

    :param store: the migrated database.
    :param box: the operator's keys.
    :param clock: the one clock every part reads (signatures, expiry, retries, rate limits,
        deadlines, and the providers built, unless ``provider_kwargs`` names another); tests
        give an :class:`~bank_sync_bridge.testing.AdjustableClock` and move time.
    :param provider_kwargs: extra keyword arguments for every provider built.
    :param resolver: resolves the host names of tenants' callback URLs (the system's resolver
        by default; tests give a fixed table).
    """

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        settings: ServiceSettings | None = None,
        *,
        clock: ServiceClock = SYSTEM_CLOCK,
        provider_kwargs: Mapping[str, Any] | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.store = store
        self.box = box
        self.settings = settings or ServiceSettings()
        self.clock = clock
        self.logger = logging.getLogger(LOGGER_NAME)
        self.providers = ProviderPool(
            store,
            box,
            self.settings,
            provider_kwargs={"clock": clock, **(provider_kwargs or {})},
            clock=clock,
        )
        self.delivery = EventDelivery(store, box, self.settings, clock=clock, resolver=resolver)
        self.tenancy = Tenancy(
            store, box, self.settings, clock=clock, on_claim=self.delivery.adopt_orphan_events
        )
        self.router = Router(
            store,
            providers=self.providers,
            tenancy=self.tenancy,
            delivery=self.delivery,
            clock=clock,
        )

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises (errors become JSON answers and a log line)."""
        return self.router.handle(request)

    @property
    def public_url(self) -> str | None:
        """The URL browsers reach the service at (the server's own address by default)."""
        return self.providers.public_url

    @public_url.setter
    def public_url(self, url: str | None) -> None:
        self.providers.public_url = url

    def aggregator(self) -> admin.AggregatorConfig:
        """The operator's aggregator configuration, cached for ``config_ttl`` seconds."""
        return self.providers.config()

    def aggregator_changed(self) -> None:
        """Read the aggregator configuration again now rather than after ``config_ttl``."""
        self.providers.forget_config()

    def provider(self, user_ref: str) -> Provider:
        """A provider of the operator's aggregator bound to the aggregator user ``user_ref``."""
        return self.providers.provider(user_ref)

    @property
    def delivery_wakeup(self) -> threading.Event:
        """Set when an event waits for delivery, so the delivery thread wakes at once."""
        return self.delivery.wakeup

    def store_events(self, kind: str, events: list[WebhookEvent]) -> int:
        """Store each event once, routed to its tenant; returns how many were new."""
        return self.delivery.store_events(kind, events)

    def deliver_due(self, limit: int = 50) -> int:
        """Post due events to their tenants' callback URLs; returns how many were delivered."""
        return self.delivery.deliver_due(limit)


__all__ = [
    "ApiError",
    "Caller",
    "Request",
    "Response",
    "ServiceApp",
    "ServiceSettings",
    "Tenant",
]

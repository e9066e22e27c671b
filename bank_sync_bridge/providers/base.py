"""The :class:`Provider` protocol that every aggregator client implements.

The Odoo addon and the bridge service talk only to this protocol, so they never branch on the
aggregator. A provider instance is bound to one aggregator *user* (one Odoo company, or one
tenant company of the bridge service): ``user_ref`` is our stable id for it (Bridge
``external_user_id``), and credentials come from :class:`ProviderConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

from ..model import (
    Account,
    Connection,
    ConnectResult,
    ConnectSession,
    Cursor,
    Institution,
    TransactionPage,
    WebhookEvent,
)

#: Returns "now" as an aware UTC datetime; injectable so tests and emulators move time.
Clock = Callable[[], datetime]


class TokenStore(Protocol):
    """Where a provider keeps short-lived tokens between calls (memory, Odoo, service DB)."""

    def get(self, key: str) -> Mapping[str, Any] | None:
        """The cached token data for ``key``, or None."""

    def set(self, key: str, value: Mapping[str, Any]) -> None:
        """Remember token data for ``key``."""


class MemoryTokenStore:
    """A process-local :class:`TokenStore`."""

    def __init__(self) -> None:
        self._data: dict[str, Mapping[str, Any]] = {}

    def get(self, key: str) -> Mapping[str, Any] | None:
        """The cached token data for ``key``, or None."""
        return self._data.get(key)

    def set(self, key: str, value: Mapping[str, Any]) -> None:
        """Remember token data for ``key``."""
        self._data[key] = value


@dataclass(frozen=True)
class ProviderConfig:
    """Everything needed to build a provider for one aggregator user.

    ``base_url`` points at the vendor (or an emulator on 127.0.0.1); ``credentials`` holds
    decrypted secrets (client id/secret, tenant secret...) and must never be logged;
    ``options`` holds non-secret settings (environment, hosted page URL, seed...).
    """

    user_ref: str
    base_url: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30.0

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return (
            f"ProviderConfig(user_ref={self.user_ref!r}, base_url={self.base_url!r}, "
            f"options={dict(self.options)!r})"
        )


@runtime_checkable
class Provider(Protocol):
    """What an aggregator must offer to the addon and the bridge service."""

    #: ``sandbox``, ``bridgeapi``, ``linxo`` or ``bridge_service``.
    kind: str

    def list_institutions(
        self, *, search: str = "", country: str | None = None, limit: int = 50
    ) -> list[Institution]:
        """Banks matching ``search`` (case and accent insensitive) in ``country``,
        the most requested first."""

    def start_connect(
        self,
        *,
        callback_url: str,
        state: str,
        institution_id: str | None = None,
        locale: str = "en",
        user_email: str | None = None,
    ) -> ConnectSession:
        """Open a hosted page to add a new connection; ``state`` comes back in the callback."""

    def start_reconnect(
        self, connection_id: str, *, callback_url: str, state: str, locale: str = "en"
    ) -> ConnectSession:
        """Open a hosted page on an existing connection (SCA renewal, new credentials)."""

    def complete_connect(self, params: Mapping[str, str]) -> ConnectResult:
        """Parse the query parameters the hosted page sent back to ``callback_url``."""

    def get_connection(self, connection_id: str, *, locale: str = "en") -> Connection:
        """The connection's current state, with the aggregator's message in ``locale``."""

    def list_connections(self, *, locale: str = "en") -> list[Connection]:
        """Every connection of this user."""

    def list_accounts(self, connection_id: str | None = None) -> list[Account]:
        """Accounts of one connection (or of all connections of this user)."""

    def iter_transactions(
        self,
        account_id: str,
        *,
        cursor: Cursor | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> Iterator[TransactionPage]:
        """Stream an account's operations page by page.

        With a ``cursor`` (from a previous page or run), resume there; otherwise read the
        date window. Each page's cursor is safe to store together with that page's lines.
        Deleted and pending operations are included, flagged.
        """

    def refresh_connection(self, connection_id: str) -> Connection:
        """Ask the aggregator to refresh the connection from the bank now."""

    def delete_connection(self, connection_id: str) -> None:
        """Revoke the connection at the aggregator (a missing one is not an error)."""

    def delete_user(self) -> None:
        """Delete this aggregator user and everything it holds (company leaves)."""

    def parse_webhook(
        self, body: bytes, headers: Mapping[str, str], secrets: list[str]
    ) -> list[WebhookEvent]:
        """Verify (raise ``SignatureVerificationError``) and parse a webhook delivery."""

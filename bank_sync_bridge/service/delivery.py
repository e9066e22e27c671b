"""The aggregator's events on their way to tenants: stored once, routed to exactly one
aggregator user (so one tenant company), read by polling, and posted to the tenant's callback.

Routing is strict: an event goes to the owner of the connection it names, else of an account it
names, else to the aggregator user it names; otherwise it waits without owner until its
connection is claimed (:meth:`EventDelivery.adopt_orphan_events`). Nothing is ever sent without
its company: a receiver may take a company-less event as every company's.

Each post carries a ``delivery_id`` and ``sent_at`` in its body, equal to the signature's nonce
and timestamp, and each event the service's ``id`` and ``received_at``: all inside the signed
material, for the receiver's replay protection. The callback URL is checked again at each post
(:mod:`.callbacks`).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

from ..crypto import SecretBox
from ..model import WebhookEvent
from ..providers.bridge_service import PATH_HEADER, to_wire
from ..signing import canonical_path, sign_request
from .callbacks import (
    CallbackRefused,
    Resolver,
    check_callback_url,
    post_to_callback,
    system_resolver,
)
from .clock import ServiceClock
from .logs import LOGGER_NAME
from .settings import ServiceSettings
from .store import Store, Transaction


class EventDelivery:
    """Events stored, routed, polled and posted (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        settings: ServiceSettings,
        *,
        clock: ServiceClock,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.store = store
        self.box = box
        self.settings = settings
        self.clock = clock
        self.resolver = resolver
        self.logger = logging.getLogger(LOGGER_NAME)
        #: Set when an event waits for delivery, so the delivery thread wakes at once.
        self.wakeup = threading.Event()

    # ------------------------------------------------------------------ intake
    def store_events(self, kind: str, events: list[WebhookEvent]) -> int:
        """Store each event once (by event id), routed to its tenant; returns how many were new.

        Routing: the connection's owner, else an account's owner, else the aggregator user
        named by the event. An event nobody owns yet is kept (tenant unknown) and logged.
        """
        new = 0
        wake = False
        now = self.clock.timestamp()
        with self.store.transaction() as tx:
            tx.lock_events()
            for event in events:
                user_ref = self._route(tx, kind, event)
                tenant_row = (
                    tx.one(
                        "SELECT t.id, t.callback_url FROM aggregator_users a "
                        "JOIN tenants t ON t.id = a.tenant_id "
                        "WHERE a.user_ref = ? AND t.revoked_at IS NULL",
                        (user_ref,),
                    )
                    if user_ref
                    else None
                )
                pending = bool(tenant_row and tenant_row[1])
                inserted = tx.execute(
                    "INSERT INTO events (kind, event_id, type, tenant_id, user_ref, "
                    "connection_id, payload, received_at, delivery_state, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        kind,
                        event.event_id,
                        event.type,
                        tenant_row[0] if tenant_row else None,
                        user_ref if tenant_row else None,
                        event.connection_id,
                        json.dumps(to_wire(event), default=str),
                        now,
                        "pending" if pending else "none",
                        now if pending else None,
                    ),
                )
                if inserted:
                    new += 1
                    wake = wake or pending
                    if tenant_row is None:
                        self.logger.warning(
                            "event without owner",
                            extra={"fields": {"event_id": event.event_id, "type": event.type}},
                        )
        if wake:
            self.wakeup.set()
        return new

    @staticmethod
    def _route(tx: Transaction, kind: str, event: WebhookEvent) -> str | None:
        if event.connection_id:
            row = tx.one(
                "SELECT user_ref FROM connections WHERE kind = ? AND connection_id = ?",
                (kind, str(event.connection_id)),
            )
            if row:
                return str(row[0])
        for account_id in event.account_ids:
            row = tx.one(
                "SELECT user_ref FROM accounts WHERE kind = ? AND account_id = ?",
                (kind, str(account_id)),
            )
            if row:
                return str(row[0])
        if event.user_ref:
            row = tx.one(
                "SELECT user_ref FROM aggregator_users WHERE user_ref = ?", (event.user_ref,)
            )
            if row:
                return str(row[0])
        return None

    def adopt_orphan_events(
        self, tx: Transaction, kind: str, connection_id: str, user_ref: str
    ) -> None:
        """Give a newly claimed connection the events that arrived before anyone owned it.

        Aggregators often announce a connection (Bridge ``item.created``) before the user's
        browser is back in Odoo. Such events are stored without owner; they are moved to the
        end of the stream (new ids) so that a tenant polling "after its last id" sees them.
        """
        orphans = tx.all(
            "SELECT id, event_id, type, payload, received_at FROM events "
            "WHERE kind = ? AND connection_id = ? AND tenant_id IS NULL ORDER BY id",
            (kind, connection_id),
        )
        if not orphans:
            return
        tenant = tx.one(
            "SELECT t.id, t.callback_url FROM aggregator_users a "
            "JOIN tenants t ON t.id = a.tenant_id WHERE a.user_ref = ? AND t.revoked_at IS NULL",
            (user_ref,),
        )
        if tenant is None:
            return
        tx.lock_events()
        pending = bool(tenant[1])
        now = self.clock.timestamp()
        for row_id, event_id, type_, payload, received_at in orphans:
            tx.execute("DELETE FROM events WHERE id = ?", (row_id,))
            tx.execute(
                "INSERT INTO events (kind, event_id, type, tenant_id, user_ref, connection_id, "
                "payload, received_at, delivery_state, next_attempt_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    event_id,
                    type_,
                    tenant[0],
                    user_ref,
                    connection_id,
                    payload,
                    received_at,
                    "pending" if pending else "none",
                    now if pending else None,
                ),
            )
        if pending:
            self.wakeup.set()

    # ------------------------------------------------------------------ polling
    def events_after(self, tenant_id: int, after: int, limit: int) -> tuple[list[Any], int]:
        """The tenant's events with an id above ``after`` (at most ``limit``), and the id to
        poll from next time."""
        with self.store.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT e.id, e.payload, a.company, e.received_at FROM events e "
                "LEFT JOIN aggregator_users a "
                "ON a.user_ref = e.user_ref AND a.tenant_id = e.tenant_id "
                "WHERE e.tenant_id = ? AND e.id > ? ORDER BY e.id LIMIT ?",
                (tenant_id, after, limit),
            )
        # An event always names its company: a receiver may hand a company-less one to every
        # company sharing this tenant, so such a row (written by an older version) is skipped.
        events = [event_item(*row) for row in rows if row[2] is not None]
        return events, rows[-1][0] if rows else after

    # ------------------------------------------------------------------ callbacks
    def set_callback(self, tenant_id: int, url: str) -> None:
        """Register the tenant's callback URL.

        :raises CallbackRefused: the URL is not one the service will call.
        """
        check_callback_url(url, resolver=self.resolver, test_mode=self.settings.test_mode)
        with self.store.transaction() as tx:
            tx.execute("UPDATE tenants SET callback_url = ? WHERE id = ?", (url, tenant_id))

    def remove_callback(self, tenant_id: int) -> None:
        """Forget the tenant's callback URL; its events are then only polled."""
        with self.store.transaction() as tx:
            tx.execute("UPDATE tenants SET callback_url = NULL WHERE id = ?", (tenant_id,))
            tx.execute(
                "UPDATE events SET delivery_state = 'none' WHERE tenant_id = ? "
                "AND delivery_state = 'pending'",
                (tenant_id,),
            )

    def deliver_due(self, limit: int = 50) -> int:
        """Post due events to their tenants' callback URLs; returns how many were delivered.

        Each row is claimed first (a lease), so several service processes never post the same
        event at the same time; a failed post is retried with exponential backoff and given up
        after ``delivery_max_attempts`` (the event stays available to polling).
        """
        now = self.clock.timestamp()
        lease = now + self.settings.delivery_timeout * 4
        with self.store.transaction(write=False) as tx:
            due = tx.all(
                "SELECT e.id, e.next_attempt_at FROM events e "
                "WHERE e.delivery_state = 'pending' AND e.next_attempt_at <= ? "
                "ORDER BY e.id LIMIT ?",
                (now, limit),
            )
        delivered = 0
        for event_id, previous in due:
            with self.store.transaction() as tx:
                claimed = tx.execute(
                    "UPDATE events SET next_attempt_at = ? WHERE id = ? "
                    "AND delivery_state = 'pending' AND next_attempt_at = ?",
                    (lease, event_id, previous),
                )
                row = (
                    tx.one(
                        "SELECT e.payload, a.company, e.received_at, e.attempts, t.client_id, "
                        "t.secret_enc, t.callback_url FROM events e "
                        "JOIN tenants t ON t.id = e.tenant_id "
                        "LEFT JOIN aggregator_users a "
                        "ON a.user_ref = e.user_ref AND a.tenant_id = e.tenant_id "
                        "WHERE e.id = ?",
                        (event_id,),
                    )
                    if claimed
                    else None
                )
            if row is None:
                continue
            payload, company, received_at, attempts, client_id, secret_enc, url = row
            if company is None:
                # Never sent without its company (see events_after): given up at once.
                error, url = "no company: never delivered", None
            elif url:
                error = self._post_event(
                    event_item(event_id, payload, company, received_at),
                    client_id=client_id,
                    secret_enc=secret_enc,
                    url=url,
                )
            else:
                error = "no callback URL"
            with self.store.transaction() as tx:
                if error is None:
                    delivered += 1
                    tx.execute(
                        "UPDATE events SET delivery_state = 'delivered', attempts = ?, "
                        "last_error = NULL WHERE id = ?",
                        (attempts + 1, event_id),
                    )
                else:
                    attempts += 1
                    give_up = attempts >= self.settings.delivery_max_attempts or not url
                    tx.execute(
                        "UPDATE events SET delivery_state = ?, attempts = ?, "
                        "next_attempt_at = ?, last_error = ? WHERE id = ?",
                        (
                            "failed" if give_up else "pending",
                            attempts,
                            self.clock.timestamp() + min(300.0, 2.0**attempts),
                            error[:500],
                            event_id,
                        ),
                    )
        return delivered

    def _post_event(
        self, item: dict[str, Any], *, client_id: str, secret_enc: str, url: str
    ) -> str | None:
        """Post one event, signed with the tenant secret, to the tenant's callback URL (checked
        again, see :mod:`.callbacks`); None on success, else why not.

        Each post (each retry too) has its own ``delivery_id`` and ``sent_at`` in the body,
        equal to the signature's nonce and timestamp: inside the signed material, so that the
        receiver can refuse a replayed post (see the service README).
        """
        delivery_id, sent_at = uuid.uuid4().hex, int(self.clock.timestamp())
        body = json.dumps(
            {"delivery_id": delivery_id, "sent_at": sent_at, "events": [item]},
            separators=(",", ":"),
        ).encode()
        path = canonical_path(url)
        headers = sign_request(
            self.box.decrypt(secret_enc),
            "POST",
            path,
            body,
            sent_at,
            client_id=client_id,
            nonce=delivery_id,
        )
        headers.update({PATH_HEADER: path, "Content-Type": "application/json"})
        try:
            status = post_to_callback(
                url,
                body,
                headers,
                resolver=self.resolver,
                timeout=self.settings.delivery_timeout,
                test_mode=self.settings.test_mode,
                monotonic=self.clock.monotonic,
            )
        except CallbackRefused as exc:
            # Checked again at each delivery: the name may point elsewhere since it was
            # registered (DNS rebinding), or the URL predates the check.
            outcome = f"refused: {exc.message}"
        except (OSError, ValueError) as exc:
            outcome = f"no answer ({type(exc).__name__})"
        else:
            # A redirect is a failure too: it is never followed.
            outcome = None if 200 <= status < 300 else f"HTTP {status}"
        self.logger.log(
            logging.INFO if outcome is None else logging.WARNING,
            "callback delivery",
            extra={
                "fields": {
                    "client_id": client_id,
                    "event": item["id"],
                    "delivery_id": delivery_id,
                    "outcome": outcome or "delivered",
                }
            },
        )
        return outcome


def event_item(event_id: int, payload: str, company: str, received_at: float) -> dict[str, Any]:
    """An event as tenants receive it: the aggregator's event, the service's ``id`` for it
    (unique, the same in every retry and poll), its ``company`` and when the service received
    it (``received_at``, Unix seconds)."""
    item = json.loads(payload)
    item["id"] = event_id
    item["company"] = company
    item["received_at"] = int(received_at)
    return item


__all__ = ["EventDelivery", "event_item"]

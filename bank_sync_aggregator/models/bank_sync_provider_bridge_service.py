"""The ``bridge_service`` aggregator kind: a remote bank_sync_bridge service holds the
aggregator contract, and this database is one of its tenants.

The service is reached through the package's ``BridgeServiceProvider`` like any other
aggregator, so connect, callback, accounts, sync, reconnect and delete need nothing special
here. What is specific: the tenant credentials (client id + tenant secret), a "Test connection"
button, and the service's events, polled by a cron (and optionally pushed by the service to a
signed callback, controllers/bridge_service.py), which feed the same event pipeline as the
direct aggregators' webhooks (``bank.sync.webhook.event``).
"""

import logging

from odoo import api, fields, models
from odoo.exceptions import UserError

from bank_sync_bridge.errors import AuthenticationError, BankSyncError, ConnectionFailed

from ..rights import ACCOUNTING_MANAGER, ADMINISTRATOR, check_rights
from ..utils import aggregator_errors, in_test_mode

_logger = logging.getLogger(__name__)

#: Where the service posts this tenant's events when a callback is registered.
EVENTS_CALLBACK_ROUTE = "/bank_sync/bridge_service/events"
#: Events asked per poll; the cron loops until the service has no more.
POLL_PAGE_SIZE = 100
#: Pages read per aggregator and cron run, so one busy tenant cannot hold the cron forever
#: (the rest is read on the next run, from the stored event id).
POLL_MAX_PAGES = 50


class BankSyncProvider(models.Model):
    _inherit = "bank.sync.provider"

    bridge_service_last_event_id = fields.Integer(
        string="Last service event",
        readonly=True,
        copy=False,
        help="The bridge service's id of the last event read by this database; the next poll "
        "asks for the events after it.",
    )
    bridge_service_last_poll = fields.Datetime(
        string="Last poll of the service", readonly=True, copy=False
    )

    # -------------------------------------------------------------------------
    # The package's client
    # -------------------------------------------------------------------------

    def _get_credentials(self):
        credentials = super()._get_credentials()
        if self.kind != "bridge_service":
            return credentials
        # The tenant secret is stored in its own field (service_secret); the client speaks of
        # client_id / client_secret.
        return {
            "client_id": credentials.get("client_id", ""),
            "client_secret": credentials.get("service_secret", ""),
        }

    def _get_client(self, **kwargs):
        self.ensure_one()
        if self.kind == "bridge_service":
            self._check_bridge_service_settings()
        return super()._get_client(**kwargs)

    def _check_bridge_service_settings(self):
        """Say in the user's language what is missing, before the client refuses it."""
        self.ensure_one()
        stored = self.sudo()
        missing = []
        if not stored.base_url:
            missing.append(self.env._("the service URL"))
        if not stored.client_id:
            missing.append(self.env._("the client ID"))
        if not stored.service_secret_encrypted:
            missing.append(self.env._("the bridge service secret"))
        if missing:
            raise UserError(
                self.env._(
                    "The bridge service is not fully configured for %(company)s; missing: "
                    "%(missing)s. Enter what the service's operator gave you in the aggregator "
                    "settings.",
                    company=self.company_id.display_name,
                    missing=", ".join(missing),
                )
            )

    def _get_bridge_service_callback_url(self):
        self.ensure_one()
        return f"{self._get_base_url()}{EVENTS_CALLBACK_ROUTE}/{self.id}"

    # -------------------------------------------------------------------------
    # Actions
    # -------------------------------------------------------------------------

    def action_bridge_service_test(self):
        """Check the service answers (``/health``) and accepts our signature (a signed call)."""
        self.ensure_one()
        check_rights(self, ACCOUNTING_MANAGER)
        if self.kind != "bridge_service":
            raise UserError(self.env._("Only a bridge service connection can be tested here."))
        with aggregator_errors(self):
            client = self._get_client()
            try:
                health = client.health()
            except BankSyncError as error:
                raise UserError(
                    self.env._(
                        "The bridge service at %(url)s does not answer: %(detail)s. Check the "
                        "URL and that the service is running.",
                        url=self.base_url,
                        detail=error.message,
                    )
                ) from error
            try:
                # A signed, tenant-level call that costs the aggregator nothing.
                client.poll_events(after=self.bridge_service_last_event_id, limit=1)
            except AuthenticationError as error:
                raise UserError(
                    self.env._(
                        "The bridge service refused this database's credentials (HTTP "
                        "%(status)s): the client ID or the secret is wrong, or the operator "
                        "revoked them. Enter them again as the service's operator gave them. "
                        "The service says: %(detail)s",
                        status=error.status or 401,
                        detail=error.message,
                    )
                ) from error
            except ConnectionFailed as error:
                raise UserError(
                    self.env._(
                        "The bridge service at %(url)s does not answer: %(detail)s.",
                        url=self.base_url,
                        detail=error.message,
                    )
                ) from error
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "type": "success",
                "title": self.env._("Bridge service reached"),
                "message": self.env._(
                    "The service (version %(version)s) accepts this database's credentials.",
                    version=health.get("version") or "?",
                ),
                "sticky": False,
            },
        }

    def action_bridge_service_register_callback(self):
        """Ask the service to post this tenant's events to this Odoo at once (signed), on top
        of the periodic poll."""
        self.ensure_one()
        check_rights(self, ADMINISTRATOR)
        with aggregator_errors(self):
            self._get_client().set_callback_url(self._get_bridge_service_callback_url())
        return True

    def action_bridge_service_remove_callback(self):
        """Stop the service's calls to this Odoo (polling still brings the events)."""
        self.ensure_one()
        check_rights(self, ADMINISTRATOR)
        with aggregator_errors(self):
            self._get_client().set_callback_url(None)
        return True

    # -------------------------------------------------------------------------
    # Events
    # -------------------------------------------------------------------------

    def _bridge_service_events_for_me(self, events):
        """The events about this company.

        The service's events are per tenant, and several companies of this database may share
        one tenant (its client id): each event names its company, and only that company
        records it. An event that names no company goes to the only company on the tenant,
        or, when several share it, to none of them (logged): nobody's accounts are
        synchronised on a guess.
        """
        self.ensure_one()
        user_ref = self._get_user_ref()
        unnamed = [event for event in events if event.raw.get("company") is None]
        mine = [event for event in events if event.raw.get("company") == user_ref]
        if unnamed:
            sharing = self.sudo().search_count(
                [
                    ("kind", "=", "bridge_service"),
                    ("active", "=", True),
                    ("client_id", "=", self.sudo().client_id),
                ]
            )
            if sharing == 1 and self.active:
                mine = [event for event in events if event.raw.get("company") in (None, user_ref)]
            else:
                _logger.info(
                    "%s bridge service event(s) naming no company left unrecorded: %s "
                    "companies share the tenant of aggregator settings %s",
                    len(unnamed),
                    sharing,
                    self.id,
                )
        return mine

    def _bridge_service_record(self, events):
        """Record the events of this company once; returns the new ``bank.sync.webhook.event``."""
        self.ensure_one()
        mine = self._bridge_service_events_for_me(events)
        if not mine:
            return self.env["bank.sync.webhook.event"]
        new, _duplicates = self.env["bank.sync.webhook.event"].sudo()._record_events(self, mine)
        return new

    def _bridge_service_poll(self):
        """Read the service's new events into ``bank.sync.webhook.event``; returns the new
        records. The stored event id moves only with the events recorded, in one
        transaction, so a failure re-reads them next time (duplicates are harmless)."""
        self.ensure_one()
        client = self._get_client()
        new = self.env["bank.sync.webhook.event"]
        after = self.bridge_service_last_event_id
        for _page in range(POLL_MAX_PAGES):
            events, last_id = client.poll_events(after=after, limit=POLL_PAGE_SIZE)
            new |= self._bridge_service_record(events)
            if last_id <= after:
                break
            after = last_id
            self.sudo().bridge_service_last_event_id = after
            if len(events) < POLL_PAGE_SIZE:
                break
        self.sudo().bridge_service_last_poll = fields.Datetime.now()
        return new

    @api.model
    def _cron_poll_bridge_service(self):
        """Every few minutes: the events of every company on a bridge service, then the
        event pipeline is woken to synchronise the affected accounts in the background."""
        auto_commit = not in_test_mode()
        aggregators = self.sudo().search(
            [
                ("kind", "=", "bridge_service"),
                ("active", "=", True),
                ("company_id.bank_sync_enabled", "=", True),
            ]
        )
        new = self.env["bank.sync.webhook.event"]
        for aggregator in aggregators:
            try:
                with self.env.cr.savepoint():
                    new |= aggregator._bridge_service_poll()
            except Exception as error:
                # One company's unreachable service or wrong secret must not stop the others;
                # the error is the package's message (never a secret).
                _logger.warning(
                    "Polling the bridge service for aggregator settings %s failed: %s",
                    aggregator.id,
                    getattr(error, "message", None) or error,
                )
            if auto_commit:
                # Each company's events and its stored event id are kept even if a later
                # company's poll kills the worker; never in tests.
                self.env.cr.commit()  # pylint: disable=invalid-commit
        if new:
            self.env.ref("bank_sync_aggregator.ir_cron_process_webhook_events")._trigger()
        return new

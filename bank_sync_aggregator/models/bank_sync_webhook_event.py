import json
import logging
from datetime import timedelta

import psycopg2

from odoo import api, fields, models
from odoo.tools import split_every

from ..utils import describe_error, in_test_mode, naive_utc

_logger = logging.getLogger(__name__)

#: Event types (lower case) after which the affected accounts are synchronised: Bridge's
#: refresh and account events, Linxo's connection events (``connection.*`` as the Linxo client
#: names them), Powens-style "synced" events.
SYNC_EVENT_TYPES = frozenset(
    {
        "item.refreshed",
        "item.account.created",
        "item.account.updated",
        "updated",
        "connection.updated",
        "connection.new_transactions",
        "connection.created",
        "connection.refreshed",
        "connection_synced",
        "account_synced",
        "account.updated",
        "transactions.updated",
    }
)
#: Event types that mean the bank login is gone at the aggregator.
DELETE_EVENT_TYPES = frozenset({"item.deleted", "connection.deleted", "deleted"})

#: Events handled per cron call before committing and re-triggering.
BATCH_SIZE = 50
#: Handled events are kept this long for support, then deleted.
KEEP_DAYS = 90


class BankSyncWebhookEvent(models.Model):
    _name = "bank.sync.webhook.event"
    _description = "Bank Synchronisation Webhook Event"
    _order = "received_at desc, id desc"
    _rec_name = "event_type"

    provider_id = fields.Many2one(
        "bank.sync.provider", string="Aggregator", required=True, ondelete="cascade", index=True
    )
    company_id = fields.Many2one(
        related="provider_id.company_id", store=True, index=True, precompute=True
    )
    # The aggregator's id for the event, or a digest of the signed body when it has none
    # (Bridge): the unique index below is what makes a second delivery harmless.
    event_id = fields.Char(string="Event ID", required=True, readonly=True)
    event_type = fields.Char(string="Type", readonly=True)
    connection_remote_id = fields.Char(string="Connection ID", readonly=True)
    account_remote_ids = fields.Char(string="Account IDs", readonly=True)
    connection_id = fields.Many2one("bank.sync.connection", readonly=True, ondelete="set null")
    occurred_at = fields.Datetime(string="Sent at", readonly=True)
    received_at = fields.Datetime(default=fields.Datetime.now, required=True, readonly=True)
    delivery_count = fields.Integer(
        string="Deliveries",
        default=1,
        readonly=True,
        help="How many times the aggregator delivered this event; it is processed once.",
    )
    state = fields.Selection(
        [
            ("pending", "To process"),
            ("done", "Processed"),
            ("ignored", "Ignored"),
            ("failed", "Failed"),
        ],
        default="pending",
        required=True,
        readonly=True,
        index=True,
    )
    result = fields.Text(readonly=True)
    # The verified body, for support; aggregators put no secret in it.
    payload = fields.Text(readonly=True, groups="account.group_account_manager")

    _sql_constraints = [
        (
            "provider_event_uniq",
            "UNIQUE(provider_id, event_id)",
            "This webhook event was already received.",
        ),
    ]

    # -------------------------------------------------------------------------
    # Reception (called by controllers/webhook.py, already verified)
    # -------------------------------------------------------------------------

    @api.model
    def _record_events(self, aggregator, events):
        """Store verified events once; return ``(new, duplicates)`` records.

        A second delivery of the same event only increments its delivery count. Concurrent
        deliveries of the same event are settled by the unique index: the loser sees a
        duplicate, never an error.
        """
        new = self.browse()
        duplicates = self.browse()
        for event in events:
            existing = self.search(
                [("provider_id", "=", aggregator.id), ("event_id", "=", event.event_id)], limit=1
            )
            if not existing:
                try:
                    with self.env.cr.savepoint():
                        new |= self.create(self._values_from_event(aggregator, event))
                    continue
                except psycopg2.IntegrityError:
                    existing = self.search(
                        [("provider_id", "=", aggregator.id), ("event_id", "=", event.event_id)],
                        limit=1,
                    )
            existing.delivery_count += 1
            duplicates |= existing
        return new, duplicates

    @api.model
    def _webhook_secrets(self, aggregator):
        """The webhook secrets configured for ``aggregator`` (several while one is rotated)."""
        stored = aggregator.sudo().webhook_secrets_encrypted
        if not stored:
            return []
        plain = aggregator._decrypt(stored)
        return [secret.strip() for secret in plain.replace("\n", ",").split(",") if secret.strip()]

    @api.model
    def _values_from_event(self, aggregator, event):
        return {
            "provider_id": aggregator.id,
            "event_id": event.event_id,
            "event_type": event.type,
            "connection_remote_id": event.connection_id or False,
            "account_remote_ids": ",".join(event.account_ids) or False,
            "occurred_at": naive_utc(event.occurred_at),
            "payload": json.dumps(dict(event.raw), default=str, sort_keys=True),
        }

    @api.autovacuum
    def _gc_handled_events(self):
        """Forget handled events after a while. Kept long enough that any late redelivery
        of the same event still finds it (aggregators retry within hours, not months)."""
        limit = fields.Datetime.now() - timedelta(days=KEEP_DAYS)
        self.sudo().search(
            [("state", "in", ("done", "ignored")), ("received_at", "<", limit)]
        ).unlink()

    # -------------------------------------------------------------------------
    # Processing (in the background: ir_cron_process_webhook_events)
    # -------------------------------------------------------------------------

    @api.model
    def _cron_process_webhook_events(self):
        """Handle received events in batches; each one in its own savepoint."""
        auto_commit = not in_test_mode()
        pending = self.search([("state", "=", "pending")], order="id")
        done = 0
        for batch in split_every(BATCH_SIZE, pending.ids, self.browse):
            for event in batch:
                event._process()
            done += len(batch)
            self.env["ir.cron"]._notify_progress(done=done, remaining=len(pending) - done)
            if auto_commit:
                # A batch done stays done if a later one fails (core's cron batching pattern).
                self.env.cr.commit()  # pylint: disable=invalid-commit

    def _process(self):
        """Apply one event: re-read the connection and synchronise the affected accounts.

        The payload is a hint, not the truth: the connection's state is read again from the
        aggregator, and the synchronisation reads its operations from the stored cursor.
        """
        self.ensure_one()
        event_type = (self.event_type or "").lower()
        if event_type not in SYNC_EVENT_TYPES | DELETE_EVENT_TYPES:
            self.write(
                {
                    "state": "ignored",
                    "result": self.env._(
                        "Event type %(type)s needs no action.", type=self.event_type
                    ),
                }
            )
            return
        connection, accounts = self._find_targets()
        if not connection:
            self.write(
                {
                    "state": "ignored",
                    "result": self.env._("No active connection of this company matches the event."),
                }
            )
            return
        self.connection_id = connection
        try:
            with self.env.cr.savepoint():
                if event_type in DELETE_EVENT_TYPES:
                    connection._update_health(
                        {
                            "state": "disconnected",
                            "reason": False,
                            "message": self.env._(
                                "The aggregator reports that this bank connection was deleted."
                            ),
                        }
                    )
                    note = self.env._("Connection marked as disconnected.")
                else:
                    note = connection._sync_after_event(accounts)
        except Exception as error:
            _logger.warning("Webhook event %s could not be processed: %s", self.id, error)
            self.write(
                {
                    "state": "failed",
                    "result": describe_error(
                        connection.provider_id, error, bank=connection.display_name
                    ),
                }
            )
            return
        self.write({"state": "done", "result": note})

    def _find_targets(self):
        """The connection and the accounts this event is about (accounts may be empty)."""
        self.ensure_one()
        Account = self.env["bank.sync.account"]
        account_ids = [a for a in (self.account_remote_ids or "").split(",") if a]
        domain = [("provider_id", "=", self.provider_id.id), ("active", "=", True)]
        connection = self.env["bank.sync.connection"]
        if self.connection_remote_id:
            connection = connection.search(
                [*domain, ("remote_id", "=", self.connection_remote_id)], limit=1
            )
        accounts = Account
        if account_ids:
            accounts = Account.search(
                [
                    ("remote_id", "in", account_ids),
                    ("connection_id.provider_id", "=", self.provider_id.id),
                    ("connection_id.active", "=", True),
                ]
            )
            if not connection:
                connection = accounts.connection_id[:1]
            accounts = accounts.filtered(lambda a: a.connection_id == connection)
        return connection, accounts

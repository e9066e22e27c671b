from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError
from odoo.tools.misc import format_date

from bank_sync_bridge import health

from ..rights import ACCOUNTING_MANAGER, check_rights
from ..sync.run import SYNC_NOW_BUDGET, cron_sync, sync_connection_accounts
from ..utils import RATE_LIMITED, naive_utc

ACCOUNT_TYPES = [
    ("checking", "Current account"),
    ("savings", "Savings"),
    ("card", "Card"),
    ("loan", "Loan"),
    ("other", "Other"),
]
#: What an account's synchronisation is doing, as users read it.
SYNC_STATUSES = [
    ("off", "Synchronisation off"),
    ("not_linked", "Not linked"),
    ("failing", "Not synchronising"),
    ("importing", "Import in progress"),
    ("up_to_date", "Up to date"),
]


class BankSyncAccount(models.Model):
    _name = "bank.sync.account"
    _description = "Synchronised Bank Account"
    _order = "company_id, connection_id, name, id"
    _check_company_auto = True

    connection_id = fields.Many2one(
        "bank.sync.connection",
        required=True,
        ondelete="cascade",
        index=True,
        check_company=True,
        # Accounts of a deleted (archived) connection stay visible with their history.
        context={"active_test": False},
    )
    company_id = fields.Many2one(
        related="connection_id.company_id", store=True, index=True, precompute=True
    )
    provider_id = fields.Many2one(related="connection_id.provider_id")
    connection_state = fields.Selection(related="connection_id.state", string="Connection state")
    institution_name = fields.Char(related="connection_id.institution_name", string="Bank")
    remote_id = fields.Char(string="Account ID", required=True, readonly=True, copy=False)
    name = fields.Char(string="Label", required=True, readonly=True)
    masked_number = fields.Char(string="Account number", readonly=True)
    iban = fields.Char(string="IBAN", readonly=True)
    currency_id = fields.Many2one("res.currency", readonly=True)
    # The aggregator's ISO code, kept even when the currency is not active in this database.
    currency_code = fields.Char(readonly=True)
    account_type = fields.Selection(ACCOUNT_TYPES, string="Type", default="checking")
    balance = fields.Monetary(currency_field="currency_id", readonly=True)
    balance_date = fields.Datetime(readonly=True)
    state = fields.Selection(
        [("active", "OK"), ("inactive", "No longer shared")],
        required=True,
        default="active",
        readonly=True,
        help="The aggregator stops sharing an account when the bank or the user removes it; "
        "its imported history stays.",
    )
    history_start_date = fields.Date(
        help="Operations booked before this date are not imported (first synchronisation)."
    )
    journal_id = fields.Many2one(
        "account.journal",
        domain="[('type', '=', 'bank')]",
        check_company=True,
        ondelete="set null",
        index="btree_not_null",
        copy=False,
    )
    statement_grouping = fields.Selection(
        [("none", "No statement"), ("day", "One per day"), ("month", "One per month")],
        string="Statements",
        required=True,
        default="none",
        help="Group imported operations into bank statements, with their balances.",
    )
    # The consent's end, shown on the account too (it is the connection's).
    consent_expiry = fields.Datetime(related="connection_id.consent_expiry")
    consent_state = fields.Selection(related="connection_id.consent_state")

    # The synchronisation's own state, written by the engine (sync/) and the retries below.
    #
    # Where the aggregator's stream resumes (bank_sync_bridge.model.Cursor.dumps()): written in
    # the same transaction as the lines of the page it follows, so a crash never loses nor
    # repeats an operation.
    sync_cursor = fields.Text(readonly=True, copy=False)
    # A forced run continuing in the background: its window and its own cursor (JSON).
    sync_forced_state = fields.Text(readonly=True, copy=False)
    sync_requested = fields.Boolean(
        readonly=True, copy=False, help="A synchronisation is waiting for the background job."
    )
    # Who asked for it (recorded on the run the background job makes): webhook, manual...
    sync_requested_trigger = fields.Char(readonly=True, copy=False)
    # When this account's last run started: the daily job leaves it alone for a while after.
    sync_last_attempt = fields.Datetime(readonly=True, copy=False)
    # After a 429 the account waits until then; the daily job skips it meanwhile.
    sync_not_before = fields.Datetime(readonly=True, copy=False)
    # The operations since the history start date were read to the end once (the first
    # import is complete): until then a run without cursor reads from the history start again,
    # and no opening line is made.
    sync_history_complete = fields.Boolean(string="History imported", readonly=True, copy=False)
    # First sync of an empty journal: an opening line will make its balance the bank's...
    sync_needs_opening = fields.Boolean(readonly=True, copy=False)
    # ...and, once made, is not considered again for this journal (relinking resets both).
    sync_opening_done = fields.Boolean(readonly=True, copy=False)
    run_ids = fields.One2many("bank.sync.run", "account_id", string="Synchronisations")
    last_run_id = fields.Many2one(
        "bank.sync.run",
        compute="_compute_last_run_id",
        search="_search_last_run_id",
        string="Last synchronisation",
    )
    last_run_state = fields.Selection(related="last_run_id.state", string="Last run")

    # What the synchronisation is doing, for the lists, the form and the journal's card: an
    # account whose history is still being read shows how far the import got, not "OK".
    bank_sync_enabled = fields.Boolean(
        related="company_id.bank_sync_enabled", string="Synchronisation on"
    )
    sync_status = fields.Selection(
        SYNC_STATUSES, string="Synchronisation", compute="_compute_sync_status"
    )
    sync_progress = fields.Char(string="Import progress", compute="_compute_sync_status")

    # Health: the last balance check and the alerts already sent.
    balance_difference = fields.Monetary(
        currency_field="currency_id",
        readonly=True,
        copy=False,
        help="Journal balance minus the bank's balance at the last check (zero when they agree).",
    )
    # The bank's balance of that check: a change made by hand in the journal is compared with
    # it again at once (sync/balance.py, recheck_after_change).
    balance_checked_bank = fields.Monetary(
        string="Bank balance at the last check",
        currency_field="currency_id",
        readonly=True,
        copy=False,
    )
    # When the journal was last compared with the bank's balance.
    balance_check_date = fields.Datetime(readonly=True, copy=False)
    # The difference last reported to the accounting managers: one alert per difference.
    balance_alert_difference = fields.Monetary(
        currency_field="currency_id", readonly=True, copy=False
    )
    # Set when a stall alert went out, cleared when operations arrive again: one alert per
    # silence, not one per day.
    stall_alert_date = fields.Date(
        string="No operations alert",
        readonly=True,
        copy=False,
        help="When an alert said that this account, which usually receives operations, had "
        "brought none for the number of days set in the settings.",
    )

    _sql_constraints = [
        (
            "connection_remote_uniq",
            "UNIQUE(connection_id, remote_id)",
            "This account is already registered for this connection.",
        ),
        (
            "journal_uniq",
            "UNIQUE(journal_id)",
            "A journal can be linked to only one synchronised account.",
        ),
    ]

    # -------------------------------------------------------------------------
    # Computes
    # -------------------------------------------------------------------------

    @api.depends("name", "masked_number", "institution_name")
    def _compute_display_name(self):
        for account in self:
            parts = [account.institution_name, account.name, account.masked_number]
            account.display_name = " - ".join(part for part in parts if part)

    @api.depends("run_ids")
    def _compute_last_run_id(self):
        for account in self:
            account.last_run_id = account.run_ids[:1]

    def _search_last_run_id(self, operator, value):
        # Searchable so that a run's new state recomputes ``last_run_state`` of its account
        # (Odoo needs to find the accounts whose last run it is).
        if operator in ("=", "!=") and not value:
            return [("run_ids", operator, False)]
        self.env.cr.execute(
            "SELECT DISTINCT ON (account_id) id FROM bank_sync_run ORDER BY account_id, id DESC"
        )
        last_ids = [row[0] for row in self.env.cr.fetchall()]
        if isinstance(value, str):
            runs = self.env["bank.sync.run"].search([("id", "in", last_ids)])
            return [
                ("run_ids", "in", runs.filtered_domain([("display_name", operator, value)]).ids)
            ]
        runs = self.env["bank.sync.run"]._search([("id", "in", last_ids), ("id", operator, value)])
        return [("run_ids", "in", runs)]

    @api.depends(
        "journal_id",
        "state",
        "sync_history_complete",
        "sync_forced_state",
        "company_id.bank_sync_enabled",
        "connection_id.state",
        "connection_id.active",
        "run_ids.state",
    )
    @api.depends_context("lang")
    def _compute_sync_status(self):
        importing = self.browse()
        for account in self:
            account.sync_progress = False
            connection = account.connection_id
            last_run = account.last_run_id
            if not account.bank_sync_enabled:
                account.sync_status = "off"
            elif not account.journal_id or account.state != "active":
                account.sync_status = "not_linked"
            elif (
                not connection.active
                or connection.state in ("action_needed", "temporary_failure", "disconnected")
                or last_run.state == "failed"
            ):
                account.sync_status = "failing"
            elif (
                last_run.state in ("running", "partial")
                or not account.sync_history_complete
                or account.sync_forced_state
            ):
                account.sync_status = "importing"
                importing |= account
            else:
                account.sync_status = "up_to_date"
        # What was imported so far, read only for the imports in progress (one query).
        imported = importing._imported_so_far()
        for account in importing:
            account.sync_progress = account._describe_progress(*imported.get(account, (0,)))

    def _imported_so_far(self):
        """``{account: (lines, first date, last date)}`` of the operations imported into each
        account's journal (one query for all)."""
        linked = self.filtered("journal_id")
        if not linked.ids:
            return {}
        groups = (
            self.env["account.bank.statement.line"]
            .sudo()
            ._read_group(
                [
                    ("bank_sync_account_id", "in", linked.ids),
                    ("bank_sync_status", "=", "booked"),
                ],
                ["bank_sync_account_id"],
                ["__count", "date:min", "date:max"],
            )
        )
        return {
            account.with_env(self.env): (count, first, last)
            for account, count, first, last in groups
        }

    def _describe_progress(self, count, first=None, last=None):
        """How far a running import got, in the reader's language and date format."""
        self.ensure_one()
        if not count:
            return self.env._("Waiting for the first operations from the bank.")
        return self.env._(
            "%(count)s operation(s) imported so far, from %(first)s to %(last)s.",
            count=count,
            first=format_date(self.env, first),
            last=format_date(self.env, last),
        )

    # -------------------------------------------------------------------------
    # Constraints
    # -------------------------------------------------------------------------

    @api.constrains("journal_id", "currency_id")
    def _check_journal_currency(self):
        for account in self.filtered(lambda a: a.journal_id and a.currency_id):
            journal_currency = account.journal_id.currency_id or account.company_id.currency_id
            if journal_currency != account.currency_id:
                raise ValidationError(
                    self.env._(
                        "The account %(account)s is in %(currency)s but the journal "
                        "%(journal)s is in %(journal_currency)s: link it to a journal in "
                        "%(currency)s.",
                        account=account.display_name,
                        currency=account.currency_id.name,
                        journal=account.journal_id.display_name,
                        journal_currency=journal_currency.name,
                    )
                )

    # -------------------------------------------------------------------------
    # CRUD
    # -------------------------------------------------------------------------

    def init(self):
        res = super().init()
        # Accounts checked before the bank's balance of the check was kept: the balance read
        # with that check is the closest one (a later refresh may have moved it).
        self.env.cr.execute(
            """
            UPDATE bank_sync_account
               SET balance_checked_bank = balance
             WHERE balance_check_date IS NOT NULL
               AND balance_checked_bank IS NULL
            """
        )
        return res

    def write(self, vals):
        if "journal_id" in vals:
            moved = self.filtered(lambda a: a.journal_id.id != (vals["journal_id"] or False))
            if moved:
                # Sync keys live in a journal: another journal starts its own first import,
                # from its history start date, with its own opening line.
                super(BankSyncAccount, moved).write(
                    {
                        "sync_cursor": False,
                        "sync_forced_state": False,
                        "sync_history_complete": False,
                        "sync_needs_opening": False,
                        "sync_opening_done": False,
                    }
                )
        result = super().write(vals)
        if vals.get("journal_id"):
            # The journal's Bank Feeds say where its operations come from.
            self.journal_id.filtered(
                lambda j: j.bank_statements_source != "bank_sync"
            ).bank_statements_source = "bank_sync"
        return result

    # -------------------------------------------------------------------------
    # Actions
    # -------------------------------------------------------------------------

    def action_open_link_wizard(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Link to a journal"),
            "res_model": "bank.sync.link.wizard",
            "view_mode": "form",
            "target": "new",
            "context": {"default_account_id": self.id},
        }

    def action_unlink_journal(self):
        """Stop synchronising these accounts; imported operations stay in their journals."""
        check_rights(self, ACCOUNTING_MANAGER)
        self.write({"journal_id": False})
        return True

    def action_sync_now(self):
        """Sync now: a short first part while the user waits, the rest in the background."""
        check_rights(self, ACCOUNTING_MANAGER)
        return self._sync_now()

    def _sync_now(self, companies=None):
        """Sync now on these accounts (the caller checked the rights), or say why none can be
        synchronised; ``companies``: those the user asked for (a journal's, a connection's),
        when there may be no account to tell."""
        accounts = self.filtered_domain(self._domain_syncable())
        if not accounts:
            raise UserError(self._explain_not_syncable(companies))
        runs = accounts._sync_accounts("manual", time_budget=SYNC_NOW_BUDGET)
        return runs._notification()

    def action_view_runs(self):
        self.ensure_one()
        return self.env["bank.sync.run"]._action_for([("account_id", "=", self.id)])

    # -------------------------------------------------------------------------
    # Business
    # -------------------------------------------------------------------------

    @api.model
    def _values_from_remote(self, remote):
        """Field values of a :class:`bank_sync_bridge.model.Account`."""
        currency = (
            self.env["res.currency"]
            .with_context(active_test=False)
            .search([("name", "=", (remote.currency or "").upper())], limit=1)
        )
        return {
            "remote_id": remote.remote_id,
            "name": remote.label or remote.remote_id,
            "masked_number": remote.masked_number or False,
            "iban": (remote.iban or "").replace(" ", "").upper() or False,
            "currency_id": currency.id or False,
            "currency_code": remote.currency,
            "account_type": remote.type.value,
            "balance": float(remote.balance) if remote.balance is not None else 0.0,
            "balance_date": naive_utc(remote.balance_date),
            "state": "active" if remote.active else "inactive",
        }

    def _find_matching_journal(self, exclude=None):
        """The free bank journal of the company with the same IBAN and currency, if any
        (other than the journals of ``exclude``, already proposed for other accounts)."""
        self.ensure_one()
        if not self.iban:
            return self.env["account.journal"]
        sanitized = self.iban.replace(" ", "").upper()
        journals = self.env["account.journal"].search(
            [
                ("type", "=", "bank"),
                ("company_id", "=", self.company_id.id),
                ("bank_account_id.sanitized_acc_number", "=", sanitized),
                ("bank_sync_account_ids", "=", False),
                ("id", "not in", (exclude or self.env["account.journal"]).ids),
            ]
        )
        currency = self.currency_id or self.company_id.currency_id
        return journals.filtered(lambda j: (j.currency_id or j.company_id.currency_id) == currency)[
            :1
        ]

    def _new_journal_name(self):
        """The name proposed for a new journal: the bank and the account's label."""
        self.ensure_one()
        parts = [self.institution_name, self.name]
        return " - ".join(part for part in parts if part)[:64]

    def _create_sync_journal(self, name):
        """A new bank journal of the account's company for this account: its currency when
        not the company's, its IBAN as the journal's bank account."""
        self.ensure_one()
        name = (name or "").strip()
        if not name:
            raise UserError(self.env._("Give the new journal a name."))
        company = self.company_id
        vals = {
            "name": name,
            "type": "bank",
            "company_id": company.id,
            "bank_statements_source": "bank_sync",
        }
        if self.currency_id and self.currency_id != company.currency_id:
            vals["currency_id"] = self.currency_id.id
        if self.iban:
            # create() turns bank_acc_number into the journal's res.partner.bank (reusing an
            # existing one with the same number for the company).
            vals["bank_acc_number"] = self.iban
        return self.env["account.journal"].with_company(company).create(vals)

    def _link_journal(self, history_start_date, journal=None, new_journal_name=None):
        """Link this account to ``journal``, or to a new journal named ``new_journal_name``,
        its history starting on ``history_start_date``: the one place where an account gets
        its journal (both link screens come here). Checks everything before creating the
        journal; returns the journal. The caller checks the user's rights and asks for the
        first import."""
        self.ensure_one()
        if self.state != "active":
            raise UserError(
                self.env._(
                    "The aggregator no longer shares %(account)s: it cannot be linked.",
                    account=self.display_name,
                )
            )
        if not history_start_date:
            raise UserError(self.env._("Choose the history start date."))
        if history_start_date > fields.Date.context_today(self):
            raise UserError(self.env._("The history start date cannot be in the future."))
        if journal is None:
            journal = self._create_sync_journal(new_journal_name)
        elif not journal:
            raise UserError(self.env._("Choose the journal to link, or create a new one."))
        self.write({"journal_id": journal.id, "history_start_date": history_start_date})
        return journal

    @api.model
    def _domain_syncable(self):
        """Accounts the synchronisation engine may import: linked to a journal, shared by the
        aggregator, on a live connection of the company's active aggregator, with the
        company's synchronisation switched on."""
        return [
            ("journal_id", "!=", False),
            ("state", "=", "active"),
            ("connection_id.active", "=", True),
            ("connection_id.state", "!=", "disconnected"),
            ("connection_id.provider_id.active", "=", True),
            ("company_id.bank_sync_enabled", "=", True),
        ]

    def _explain_not_syncable(self, companies=None):
        """Why none of these accounts can be synchronised, first blocking reason first (the
        order a user fixes them in): a message for Sync now. ``companies``: those the user
        asked for (a journal's, a connection's), when there may be no account to tell."""
        companies = (companies or self.company_id) or self.env.company
        switched_off = companies.filtered(lambda c: not c.bank_sync_enabled)
        if switched_off and switched_off == companies:
            return self.env._(
                "Bank synchronisation is switched off for %(company)s: nothing is imported. "
                "An administrator can switch it on in Settings > Invoicing, section Bank "
                "synchronisation.",
                company=", ".join(switched_off.mapped("display_name")),
            )
        if not self:
            return self.env._(
                "No synchronised bank account is linked here yet: connect a bank, then link "
                "its account to this journal."
            )
        if not self.filtered("journal_id"):
            return self.env._(
                "These accounts are not linked to a journal yet: use Link on the account first."
            )
        connections = self.connection_id
        if connections and all(
            not c.active or c.state == "disconnected" or not c.provider_id.active
            for c in connections
        ):
            return self.env._(
                "The bank connection was deleted or its aggregator is no longer the active one: "
                "add the bank again to resume the synchronisation."
            )
        if self and all(account.state != "active" for account in self):
            return self.env._("The aggregator no longer shares these accounts.")
        return self.env._("None of these accounts is linked to a journal and active.")

    def _start_first_import(self):
        """The first import of these newly linked accounts, asked for now in the background
        (the engine's queue), not tomorrow morning; returns those that can be synchronised."""
        syncable = self.filtered_domain(self._domain_syncable())
        if syncable:
            syncable._request_sync("manual")
        return syncable

    def _request_sync(self, trigger="webhook"):
        """Ask the background job to sync these accounts soon (webhooks, sync now's rest)."""
        self.sudo().write({"sync_requested": True, "sync_requested_trigger": trigger})
        self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")._trigger()

    def _sync_account(
        self,
        trigger="manual",
        *,
        date_from=None,
        date_to=None,
        client=None,
        time_budget=None,
        commit=None,
    ):
        """Import this account's new operations, then check its balance; returns the
        ``bank.sync.run``.

        Never raises for an aggregator failure: the run records it (state ``failed``).
        """
        self.ensure_one()
        return self._sync_accounts(
            trigger,
            date_from=date_from,
            date_to=date_to,
            client=client,
            time_budget=time_budget,
            commit=commit,
        )

    def _sync_accounts(self, trigger, **kwargs):
        """Sync several accounts, one aggregator client and one balance read per connection."""
        return sync_connection_accounts(self, trigger, **kwargs)

    @api.model
    def _cron_sync(self, batch_size=20):
        """The daily import: every linked account, in batches, progress reported."""
        return cron_sync(self, batch_size=batch_size)

    # -------------------------------------------------------------------------
    # Health: accounts that stopped receiving operations
    # -------------------------------------------------------------------------

    def _check_stall(self):
        """Alert once when a busy account of a working connection goes silent; resolve the
        alert when operations come in again (rules in bank_sync_bridge.health.check_stall)."""
        today = fields.Date.context_today(self)
        candidates = self.filtered_domain(self._domain_syncable())
        for account in candidates:
            if account.connection_id.state != "ok":
                # A broken connection has its own alert; silence is then expected.
                continue
            lines = self.env["account.bank.statement.line"].search_read(
                [
                    ("journal_id", "=", account.journal_id.id),
                    ("date", ">=", today - timedelta(days=health.DEFAULT_STALL_LOOKBACK_DAYS)),
                ],
                ["date"],
            )
            check = health.check_stall(
                [line["date"] for line in lines],
                today,
                stall_days=account.company_id.bank_sync_stall_days or health.DEFAULT_STALL_DAYS,
            )
            if check.stalled and not account.stall_alert_date:
                account.stall_alert_date = today
                account._stall_raise_alert(check)
            elif not check.stalled and account.stall_alert_date:
                account.stall_alert_date = False
                account._stall_resolve_alert()

    def _stall_raise_alert(self, check):
        self.ensure_one()
        connection = self.connection_id
        users = connection._health_alert_users()
        summary = self.env._(
            "%(account)s: no operations for %(days)s days",
            account=self.display_name,
            days=check.days_silent,
        )
        for user in users:
            # Our own e-mail follows: no separate "activity assigned" notification.
            connection.with_context(mail_activity_quick_update=True).activity_schedule(
                "bank_sync_aggregator.mail_activity_type_account_stalled",
                summary=summary,
                user_id=user.id,
            )
        connection._health_send_mail(
            "bank_sync_aggregator.mail_template_account_stalled",
            users.partner_id,
            render_context={"days_silent": check.days_silent},
            record=self,
        )
        connection._message_log(body=self.env._("Alert sent: %(summary)s", summary=summary))

    def _stall_resolve_alert(self):
        self.ensure_one()
        connection = self.connection_id
        note = self.env._("Operations arrive again on %(account)s.", account=self.display_name)
        # The stall activity is per connection: it is closed once none of its accounts is
        # silent any more.
        if not connection.account_ids.filtered("stall_alert_date"):
            connection.activity_feedback(
                ["bank_sync_aggregator.mail_activity_type_account_stalled"], feedback=note
            )
        connection._message_log(body=note)

    # -------------------------------------------------------------------------
    # Retries: the aggregators' rate limits and passing failures
    # -------------------------------------------------------------------------

    @api.model
    def _rate_limited_batch(self, due, batch_size):
        """Split ``due`` into the accounts that may start now and the moment the rest may.

        Each aggregator application gets a plan (bank_sync_bridge.health.plan_batch) that
        keeps its published limits per user and per application; only the accounts planned
        to start at once are taken, and the job is called again when the next may start.
        Returns ``(batch, next_at)``; ``next_at`` is None when nothing is left.
        """
        now = fields.Datetime.now()
        waiting = due.filtered(lambda a: a.sync_not_before and a.sync_not_before > now)
        ready = due - waiting
        batch = self.browse()
        next_offsets = [(a.sync_not_before - now).total_seconds() for a in waiting]
        for aggregator in ready.connection_id.provider_id:
            accounts = ready.filtered(lambda a, p=aggregator: a.connection_id.provider_id == p)
            user_ref = aggregator.sudo()._get_user_ref()
            plan = health.plan_batch(
                [health.SyncJob(str(account.id), user_ref) for account in accounts],
                health.published_limits(aggregator.kind),
            )
            for job in plan.jobs:
                if job.start_offset == 0 and len(batch) < batch_size:
                    batch |= self.browse(int(job.job.key))
                else:
                    next_offsets.append(job.start_offset)
        if not next_offsets:
            return batch, None
        return batch, now + timedelta(seconds=max(min(next_offsets), 0))

    @api.model
    def _schedule_retries(self, runs):
        """After any synchronisation: a 429 resumes when the aggregator allows, a passing
        failure is retried later; the background job is woken for the earliest of them."""
        times = (self._resume_after_rate_limits(runs), self._retry_failed_windows(runs))
        first = min(filter(None, times), default=None)
        if first:
            self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")._trigger(at=first)
        return first

    @api.model
    def _error_streak(self, account, matches, limit):
        """How many of ``account``'s last runs in a row (at least 1, at most ``limit``) ended
        on an error that ``matches(run)`` accepts; runs skipped because another worker had the
        account do not break the streak."""
        streak = 0
        for run in self.env["bank.sync.run"].search(
            [("account_id", "=", account.id), ("state", "!=", "skipped")],
            order="id desc",
            limit=limit,
        ):
            if not matches(run):
                break
            streak += 1
        return max(streak, 1)

    @api.model
    def _retry_failed_windows(self, runs):
        """A window that failed for a passing reason (the aggregator down, a timeout, a broken
        answer) is tried again by itself after 15 minutes, 1 hour and 4 hours, then waits for
        the next daily import. The cursor never moved past what was imported: the retry reads
        the same window again. Failures that need someone (consent, credentials) are not."""
        now = fields.Datetime.now()
        retry_at = None
        for run in runs.filtered(lambda r: r.state == "failed" and _passes_by_itself(r)):
            account = run.account_id
            attempt = self._error_streak(
                account, _passes_by_itself, len(health.DEFAULT_RETRY_DELAYS) + 1
            )
            plan = health.plan_failure_retry(now, attempt)
            if plan.defer_to_next_run:
                note = self.env._(
                    "Failed again: the next daily import will try this account again."
                )
                account.sudo().write({"sync_not_before": False})
            else:
                when = plan.resume_at.replace(tzinfo=None)
                note = self.env._(
                    "Retried automatically at %(time)s (UTC).",
                    time=fields.Datetime.to_string(when),
                )
                account.sudo().write(
                    {
                        "sync_requested": True,
                        # A forced run keeps its window; anything else is the daily job's.
                        "sync_requested_trigger": "forced" if run.trigger == "forced" else "cron",
                        "sync_not_before": when,
                    }
                )
                retry_at = min(retry_at or when, when)
            run.sudo().write({"note": note})
        return retry_at

    @api.model
    def _resume_after_rate_limits(self, runs):
        """Runs stopped by a 429 back off and resume later, in the background: the run says
        when, the account keeps its place, and after too many tries it simply waits for the
        next day's import. The cursor never moved past what was imported, so nothing is lost."""
        now = fields.Datetime.now()
        resume_at = None
        for run in runs.filtered(_slowed_down):
            account = run.account_id
            attempt = self._error_streak(
                account, _slowed_down, health.DEFAULT_MAX_RATE_LIMIT_ATTEMPTS
            )
            plan = health.plan_rate_limit_backoff(now, attempt)
            when = plan.resume_at.replace(tzinfo=None)
            if plan.defer_to_next_run:
                note = self.env._(
                    "The aggregator keeps asking to slow down: this account waits for the "
                    "next daily import."
                )
                account.sudo().write({"sync_requested": False, "sync_not_before": False})
            else:
                note = self.env._(
                    "The aggregator asked to slow down: the import resumes at %(time)s (UTC).",
                    time=fields.Datetime.to_string(when),
                )
                account.sudo().write({"sync_requested": True, "sync_not_before": when})
                resume_at = min(resume_at or when, when)
            # Continuing in the background, not failed: nobody has anything to fix.
            run.sudo().write({"state": "partial", "note": note})
        return resume_at


def _passes_by_itself(run):
    """Whether ``run`` ended on an error that trying again later may cure without anyone (the
    aggregator or the network down, a broken answer): the package's ``retryable``, stored on
    the run. A 429 is retryable too, but backs off on its own path (:func:`_slowed_down`)."""
    return run.error_retryable and run.error_type != RATE_LIMITED


def _slowed_down(run):
    """Whether the aggregator stopped ``run`` with a 429 (too many requests)."""
    return run.error_type == RATE_LIMITED

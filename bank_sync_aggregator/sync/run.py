"""The synchronisation of one account, applied to the ledger.

The decisions (keys, diff of a page, window, twins, balances) come from the pure functions of
``bank_sync_bridge.sync``; this module reads what they need from the database in as few
queries as possible (one per page for existing keys, one for twin candidates, two for
partners) and applies the result with batched ORM calls. It is not a model: the entry points
are ``bank.sync.account._sync_account`` and ``_sync_accounts``.
"""

import json
import logging
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import psycopg2

from odoo import fields, sql_db
from odoo.exceptions import UserError, ValidationError
from odoo.tools.misc import format_date, formatLang

from ..utils import in_test_mode

_logger = logging.getLogger(__name__)

# Context for the lines the engine writes: no chatter message per imported operation (the run
# record says what happened), which saves about 10 % of the creation time.
LINE_CONTEXT = {"tracking_disable": True, "mail_create_nolog": True, "mail_notrack": True}

#: Seconds "Sync now" imports while the user waits; the background job does the rest.
SYNC_NOW_BUDGET = 4.0

#: With a time budget, new operations are created by batches of this size and the budget is
#: checked between them: a bank page (up to hundreds of operations) takes seconds to create.
BUDGET_BATCH = 20

#: A run refreshes PostgreSQL's planner statistics once it has created this many lines, then
#: each time that number doubles, and at its end. Without fresh statistics a journal that grew
#: during the import still looks empty to the planner, and Odoo's query for the last move
#: number (run for every line) reads the journal's whole year: measured on a 31,500-line
#: journal, 69 ms a line before, 0.7 ms after, and the import went about 6 times faster.
#: Autovacuum would get there only minutes later, or never where it is switched off.
ANALYZE_AFTER = 500

#: An account synced (or tried) less than this long ago is not due for the daily job again.
DAILY_INTERVAL = timedelta(hours=20)

#: First key of the advisory lock that keeps one import per account (the second is the
#: account's id): "bsnc" in ASCII.
ACCOUNT_LOCK_NAMESPACE = 0x62736E63

#: Times the opening line waits for the aggregator to stay still between its balance and a
#: re-read of what changed, within one run; the next run tries again.
OPENING_ATTEMPTS = 3

#: When the journal starts to differ from the bank, this many days are read again by date
#: (operations stamped late escape an incremental read) before anyone is alerted.
RECENT_REREAD_DAYS = 31


#: The statement line's fields that follow each field of an operation the bank may change
#: (bank_sync_bridge.sync.MUTABLE_FIELDS).
LINE_FIELDS_OF_CHANGE = {
    "label": ("payment_ref",),
    "booking_date": ("date", "bank_sync_booking_date"),
    "amount": ("amount",),
    "value_date": ("bank_sync_value_date",),
    "foreign_amount": ("foreign_currency_id", "amount_currency"),
    "foreign_currency": ("foreign_currency_id", "amount_currency"),
    "counterparty_name": ("partner_name",),
    "counterparty_account": ("account_number",),
    "bank_reference": ("ref",),
    "operation_type": ("transaction_type",),
}


def sanitize_account_number(number):
    """The form ``res.partner.bank.sanitized_acc_number`` stores (no spaces, upper case)."""
    return "".join(ch for ch in (number or "") if ch.isalnum()).upper()


def json_safe(raw):
    """The raw payload as plain JSON values (dates and decimals become strings)."""
    return json.loads(json.dumps(dict(raw or {}), default=str))


class AccountSynchroniser:
    """Imports one account's operations into its journal for one run."""

    def __init__(
        self,
        account,
        *,
        trigger,
        provider=None,
        date_from=None,
        date_to=None,
        time_budget=None,
        commit=None,
    ):
        from bank_sync_bridge import sync  # noqa: PLC0415

        self.sync = sync
        self.account = account
        self.env = account.env
        self.cr = account.env.cr
        self.trigger = trigger
        self.provider = provider
        self.date_from = date_from
        self.date_to = date_to
        self.time_budget = time_budget
        # Commit after every page only in the background job: a request or a test keeps
        # one transaction (tests must never commit).
        self.commit = (trigger == "cron" and not in_test_mode()) if commit is None else commit
        self.run = None
        self.journal = account.journal_id
        self.company = account.company_id
        self.currency = self.journal.currency_id or self.company.currency_id
        self.kind = account.connection_id.provider_id.kind
        self.started = time.monotonic()
        self.counts = dict.fromkeys(
            (
                "pages",
                "fetched_count",
                "created_count",
                "updated_count",
                "adopted_count",
                "skipped_count",
                "pending_count",
                "ignored_count",
                "deleted_count",
                "review_count",
                "reread_count",
            ),
            0,
        )
        self.ignored_keys = set()
        self.currency_ids = {}
        # Created count at the last refresh of the planner's statistics (see ANALYZE_AFTER).
        self.analyzed_at = 0
        self.lock_connection = None
        # A recent date window read again for late operations (a balance difference): it
        # stores no cursor and no forced state.
        self.late_reread = False
        # What the accountant did on each protected line of the current page (_existing).
        self.user_work = {}

    # ------------------------------------------------------------------ run

    def lock(self):
        """Take the account's import lock; False when another worker holds it.

        An advisory lock held by a database connection of its own for the whole run, not a
        row lock of the import's transaction: the background job commits after each page,
        and a row lock ended with each commit, so a second worker could take the account
        between a page and the next one (and took the first worker's live run for a dead
        one). The connection is closed by :meth:`unlock`; if the worker dies, PostgreSQL
        closes it and the lock goes with it. Nothing waits: the other worker records a
        "skipped" run.
        """
        _dbname, params = sql_db.connection_info_for(self.cr.dbname)
        params["application_name"] = f"{params.get('application_name', 'odoo')}-bank-sync"[:63]
        connection = psycopg2.connect(**params)
        connection.autocommit = True
        with connection.cursor() as cr:
            cr.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [ACCOUNT_LOCK_NAMESPACE, self.account.id]
            )
            locked = cr.fetchone()[0]
        if not locked:
            connection.close()
            return False
        self.lock_connection = connection
        return True

    def unlock(self):
        """Release the account (closing the lock's connection releases its lock)."""
        if self.lock_connection is not None:
            self.lock_connection.close()
            self.lock_connection = None

    def execute(self):
        """Run the synchronisation; always returns the ``bank.sync.run`` record."""
        account = self.account
        Run = self.env["bank.sync.run"].sudo()
        if not self.lock():
            return Run.create(
                {
                    "account_id": account.id,
                    "journal_id": self.journal.id,
                    "trigger": self.trigger,
                    "state": "skipped",
                    "end_date": fields.Datetime.now(),
                    "note": self.env._(
                        "Another synchronisation of this account is running; it was left to finish."
                    ),
                }
            )
        # Holding the lock proves no other run is alive: a run still "running" was killed.
        Run.search([("account_id", "=", account.id), ("state", "=", "running")]).write(
            {
                "state": "failed",
                "error": self.env._(
                    "Interrupted: the process stopped during the import. The next run resumed "
                    "from the last stored page."
                ),
                "end_date": fields.Datetime.now(),
            }
        )
        # The rest of a "Sync now" (or of a forced run) completes the run the user saw start,
        # instead of leaving it "continuing in background" forever next to a new one.
        self.previous_duration = 0.0
        self.resumed = False
        self.run = Run.search(
            [
                ("account_id", "=", account.id),
                ("trigger", "=", self.trigger),
                ("trigger", "in", ("manual", "forced")),
                ("state", "=", "partial"),
                ("error_type", "=", False),
            ],
            order="id desc",
            limit=1,
        )
        # Only when nothing but "skipped" runs came after it (a later run took over).
        if self.run and not Run.search_count(
            [
                ("account_id", "=", account.id),
                ("id", ">", self.run.id),
                ("state", "!=", "skipped"),
            ],
            limit=1,
        ):
            self.previous_duration = self.run.duration
            self.resumed = True
            for name in self.counts:
                self.counts[name] = self.run[name]
            self.run.write({"state": "running"})
        else:
            self.run = Run.create(
                {
                    "account_id": account.id,
                    "journal_id": self.journal.id,
                    "trigger": self.trigger,
                    "state": "running",
                }
            )
        account.sudo().sync_last_attempt = fields.Datetime.now()
        try:
            self._run()
        finally:
            self.unlock()
        if self.commit:
            # The daily job's own transaction boundary (never in tests, see ``commit``).
            self.cr.commit()  # pylint: disable=invalid-commit
        return self.run

    def _run(self):
        notes = []
        try:
            finished = self._import()
            if finished and self._needs_opening():
                note, finished = self._settle_opening()
                notes.append(note)
        # Whatever goes wrong is recorded on the run; the batch goes on with other accounts.
        except Exception as error:  # pylint: disable=broad-except
            self._fail(error)
            return
        if finished:
            # A forced range that is still to finish keeps its request (its retry).
            waiting = bool(self.account.sync_forced_state)
            self.account.sudo().write(
                {"sync_requested": waiting, "sync_requested_trigger": waiting and "forced"}
            )
            if self.resumed:
                notes.insert(0, self.env._("Completed in the background."))
            self._close("done", note="\n".join(filter(None, notes)) or None)
        else:
            self._close(
                "partial",
                note=self.env._("The rest of the import continues in the background."),
            )

    def _close(self, state, note=None):
        if self.counts["created_count"] - self.analyzed_at >= ANALYZE_AFTER:
            # The next run (and Odoo's own screens) find the journal as it now is.
            self._analyze()
        vals = dict(self.counts, state=state, end_date=fields.Datetime.now())
        vals["duration"] = self.previous_duration + time.monotonic() - self.started
        if note:
            vals["note"] = note
        self.run.write(vals)
        if state == "done":
            self.account.connection_id.sudo().last_sync_date = fields.Datetime.now()
            self.account.connection_id.sudo()._record_sync_success()

    def _fail(self, error):
        from bank_sync_bridge.errors import BankSyncError  # noqa: PLC0415

        if isinstance(error, BankSyncError | UserError | ValidationError | self.sync.SyncPlanError):
            message = getattr(error, "message", None) or str(error.args[0] if error.args else "")
        else:
            _logger.exception("Bank synchronisation of account %s failed", self.account.id)
            message = self.env._("Unexpected error: %(error)s", error=error)
        self._close("failed")
        self.run.write({"error": message, "error_type": type(error).__name__})
        if isinstance(error, BankSyncError):
            # The health policy decides (issue 6): an action needed alerts at once, a
            # temporary failure only once it lasts, a rate limit never.
            self.account.connection_id.sudo()._record_sync_error(error)

    # ------------------------------------------------------------------ window

    def _plan(self):
        account = self.account
        today = fields.Date.context_today(account)
        if self.late_reread:
            return self.sync.plan_window(
                today=today, forced_from=self.date_from, forced_to=self.date_to, forced=True
            )
        forced_state = json.loads(account.sync_forced_state) if account.sync_forced_state else {}
        cursor = None
        if self.date_from:
            date_from, date_to = self.date_from, self.date_to
        elif forced_state and self.trigger == "forced":
            # A forced run that continues in the background (or is retried): same window, its
            # own cursor. Any other run (Sync now, the daily import) does its own job and
            # leaves it waiting.
            date_from = fields.Date.to_date(forced_state["date_from"])
            date_to = fields.Date.to_date(forced_state["date_to"])
            cursor = self.sync.Cursor.loads(forced_state.get("cursor"))
        else:
            # (a forced run without dates fails below with a clear message)
            date_from, date_to = None, self.date_to
        if date_from or date_to or self.trigger == "forced":
            window = self.sync.plan_window(
                today=today, forced_from=date_from, forced_to=date_to, forced=True
            )
            window = replace(window, cursor=cursor)
            account.sudo().sync_forced_state = json.dumps(
                {
                    "date_from": str(window.date_from),
                    "date_to": str(window.date_to),
                    "cursor": cursor.dumps() if cursor else None,
                }
            )
        else:
            stored = self.sync.Cursor.loads(account.sync_cursor)
            last_booked = None
            # Until the history has been read to its end once, a run without a cursor (a first
            # import stopped inside its first page) starts again from the history start: the
            # lines already there say nothing about what is still missing below them.
            if stored is None and account.sync_history_complete:
                # Only without a cursor: on a big account this reads every line's date.
                self.cr.execute(
                    "SELECT MAX(bank_sync_booking_date) FROM account_bank_statement_line "
                    "WHERE bank_sync_account_id = %s AND bank_sync_status = 'booked'",
                    [account.id],
                )
                last_booked = self.cr.fetchone()[0]
            window = self.sync.plan_window(
                today=today,
                cursor=stored,
                last_booked_date=last_booked,
                history_start=account.history_start_date or None,
            )
        self.run.write(
            {
                "window_basis": window.basis,
                "date_from": window.date_from,
                "date_to": window.date_to,
            }
        )
        return window

    # ------------------------------------------------------------------ import

    def _import(self):
        """Stream the pages; True when the stream was read to its end."""
        account = self.account
        if not self.journal:
            raise UserError(
                self.env._(
                    "The account %(account)s is not linked to a journal.",
                    account=account.display_name,
                )
            )
        window = self._plan()
        if (
            window.basis == "history"
            and not account.sync_opening_done
            and not account.sync_needs_opening
        ):
            # First import: the opening line is only for a journal that had nothing in it but
            # what this account brought (a forced range may have come first).
            self.cr.execute(
                """
                SELECT 1 FROM account_bank_statement_line
                 WHERE journal_id = %s
                   AND (bank_sync_account_id IS NULL OR bank_sync_account_id != %s)
                 LIMIT 1
                """,
                [self.journal.id, account.id],
            )
            account.sudo().sync_needs_opening = not self.cr.fetchone()
        self.ignored_keys = set(
            self.env["bank.sync.ignored"]
            .sudo()
            .search([("account_id", "=", account.id)])
            .mapped("key")
        )
        provider = self.provider = (
            self.provider or account.connection_id.provider_id._get_provider()
        )
        pages = provider.iter_transactions(
            account.remote_id,
            cursor=window.cursor,
            date_from=window.date_from,
            # Only a forced run stops at a date: otherwise read up to the bank's own "now".
            date_to=window.date_to if window.forced else None,
        )
        finished = True
        for page in pages:
            with self.cr.savepoint():
                complete = self._apply_page(page, window)
                if complete:
                    self._store_cursor(page, window)
                    if page.last:
                        self._finish_stream(window)
                self.run.write(self.counts)
            self._page_done()
            if not complete:
                # Stopped inside the page: the cursor stays before it, and the background
                # job reads it again (the operations already created are recognised).
                finished = False
                break
            if page.last:
                break
            if self._budget_spent():
                finished = False
                break
        else:
            with self.cr.savepoint():
                self._finish_stream(window)
        if not finished:
            account.sudo().write({"sync_requested": True, "sync_requested_trigger": self.trigger})
            self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")._trigger()
        return finished

    def _page_done(self):
        if self.commit:
            # Lines and cursor of the page become durable together (never in tests); the
            # account's lock outlives the commit (see ``lock``).
            self.cr.commit()  # pylint: disable=invalid-commit
            if self._statistics_stale():
                self._analyze()
                # At once: ANALYZE's lock would otherwise keep another worker's ANALYZE
                # waiting for our whole next page.
                self.cr.commit()  # pylint: disable=invalid-commit
        elif self._statistics_stale():
            self._analyze()
        # Keep memory flat over tens of thousands of lines: nothing of a stored page is
        # needed again.
        self.env.invalidate_all()

    def _store_cursor(self, page, window):
        if page.cursor is None or self.late_reread:
            return
        account = self.account.sudo()
        if window.forced:
            state = json.loads(account.sync_forced_state or "{}")
            state["cursor"] = page.cursor.dumps()
            account.sync_forced_state = json.dumps(state)
        else:
            account.sync_cursor = page.cursor.dumps()

    def _finish_stream(self, window):
        if self.late_reread:
            return
        if window.forced:
            self.account.sudo().sync_forced_state = False
        else:
            # Every operation since the history start has been read once (from the history
            # start, then from the cursors of the same stream): from now on a lost cursor
            # may start from the last imported date. The opening line of a first import
            # waits for this (``_settle_opening``).
            self.account.sudo().sync_history_complete = True

    # ------------------------------------------------------------------ one page

    def _apply_page(self, page, window):
        sync = self.sync
        transactions = [
            self._normalise(tx)
            for tx in page.transactions
            if tx.account_id == self.account.remote_id
        ]
        self.counts["pages"] += 1
        keys = sync.transaction_keys(self.kind, transactions)
        existing = self._existing(keys)
        diff = sync.diff_page(transactions, keys, existing, self.ignored_keys)
        before = dict(self.counts)
        # The page this run stopped in is read again: what this run did to it then now
        # reads as unchanged, and is not "skipped".
        reread = min(self.counts["reread_count"], len(diff.unchanged))
        self.counts["reread_count"] = 0
        self.counts["fetched_count"] += diff.fetched
        history_start = self.account.history_start_date
        to_create = []
        # Before the history start only what a forced run asks for (a late re-read does not).
        keep_before_start = window.forced and not self.late_reread
        for key, tx in diff.create:
            if history_start and tx.booking_date < history_start and not keep_before_start:
                self.counts["skipped_count"] += 1
            else:
                to_create.append((key, tx))
        self.counts["skipped_count"] += len(diff.unchanged) - reread + len(diff.pending)
        self.counts["pending_count"] += len(diff.pending)
        self.counts["ignored_count"] += len(diff.ignored)
        for change in diff.update:
            self._update_line(change)
        for change in diff.review:
            self._flag(
                change.line_id,
                self.env._(
                    "The bank changed this operation, but the line is %(work)s: it was not "
                    "rewritten. Check it against the bank. %(changes)s",
                    work=self._work_description(change.line_id),
                    changes=self._describe_changes(change),
                ),
                baseline=change.transaction,
            )
        if diff.delete:
            lines = self.env["account.bank.statement.line"].browse(
                [line_id for _key, line_id in diff.delete]
            )
            lines.with_context(**LINE_CONTEXT).unlink()
            self.counts["deleted_count"] += len(diff.delete)
        for _key, line_id in diff.flag_deleted:
            self._flag(
                line_id,
                self.env._(
                    "The bank deleted this operation, but the line is %(work)s: it was kept. "
                    "Check it, and delete it yourself if it must go.",
                    work=self._work_description(line_id),
                ),
                status="deleted",
            )
        # Last, so that only creations can be left for later: batches under a time budget.
        size = BUDGET_BATCH if self.time_budget else max(len(to_create), 1)
        for start in range(0, len(to_create), size):
            self._create_lines(to_create[start : start + size])
            if start + size < len(to_create) and self._budget_spent():
                self._uncount_unfinished_page(before, diff)
                return False
        return True

    def _uncount_unfinished_page(self, before, diff):
        """The rest of the run reads this page again: count each operation once.

        What the page merely showed is counted when it is read again; what was done to it
        (created, adopted, updated, deleted, flagged as deleted) stays counted now and is
        remembered, so that reading it again does not also count it as skipped.
        """
        done = sum(
            self.counts[name] - before[name]
            for name in ("created_count", "adopted_count", "updated_count", "deleted_count")
        )
        for name in ("fetched_count", "skipped_count", "pending_count", "ignored_count"):
            self.counts[name] = before[name]
        self.counts["reread_count"] = before["reread_count"] + done + len(diff.flag_deleted)

    def _statistics_stale(self):
        """Whether the lines created since the last refresh may mislead the planner."""
        created = self.counts["created_count"]
        return created >= ANALYZE_AFTER and created >= 2 * self.analyzed_at

    def _analyze(self):
        # The tables an import grows, whose statistics the next lines' queries depend on.
        self.cr.execute("ANALYZE account_move, account_move_line, account_bank_statement_line")
        self.analyzed_at = max(self.counts["created_count"], 1)

    def _budget_spent(self):
        return bool(self.time_budget) and time.monotonic() - self.started > self.time_budget

    def _normalise(self, tx):
        """Drop a "foreign" amount in the journal's own currency, or in an unknown currency
        (it stays in the raw payload)."""
        if tx.foreign_currency and (
            tx.foreign_currency.upper() == self.currency.name
            or not self._currency_id(tx.foreign_currency)
            or tx.foreign_amount is None
        ):
            return replace(tx, foreign_currency=None, foreign_amount=None)
        return tx

    def _currency_id(self, code):
        code = code.upper()
        if code not in self.currency_ids:
            currency = self.env["res.currency"].search([("name", "=", code)], limit=1)
            self.currency_ids[code] = currency.id
        return self.currency_ids[code]

    def _existing(self, keys):
        """The page's keys already in the journal, with what the diff compares, and what the
        accountant did on those lines (``self.user_work``): two queries.

        A line that carries the accountant's work (a reconciliation, even partial, a
        write-off, an account chosen by hand, a note) is protected: the sync never rewrites
        nor deletes it, it asks.
        """
        self.user_work = {}
        if not keys:
            return {}
        self.cr.execute(
            """
            SELECT l.bank_sync_key, l.id, l.payment_ref, l.bank_sync_booking_date, l.amount,
                   l.bank_sync_value_date, l.amount_currency, cur.name, l.partner_name,
                   l.account_number, m.ref, l.transaction_type, l.bank_sync_status,
                   l.bank_sync_baseline
              FROM account_bank_statement_line l
              JOIN account_move m ON m.id = l.move_id
         LEFT JOIN res_currency cur ON cur.id = l.foreign_currency_id
             WHERE l.journal_id = %s AND l.bank_sync_key = ANY(%s)
            """,
            [self.journal.id, list(set(keys))],
        )
        rows = self.cr.fetchall()
        self.user_work = self.env["account.bank.statement.line"]._bank_sync_user_work(
            [row[1] for row in rows]
        )
        existing = {}
        for key, line_id, *values, status, baseline in rows:
            protected = line_id in self.user_work
            deleted = status == "deleted"
            if baseline:
                existing[key] = self.sync.snapshot_from_baseline(
                    line_id, baseline, protected=protected, deleted_flag=deleted
                )
                continue
            # A line synced before baselines were kept: its own fields stand for the bank's.
            label, booking, amount, value_date, foreign, currency, name, number, ref, kind = values
            existing[key] = self.sync.LineSnapshot(
                line_id=line_id,
                label=label or "",
                booking_date=booking,
                amount=self._decimal(amount),
                protected=protected,
                value_date=value_date,
                foreign_amount=self._decimal(foreign) if currency else None,
                foreign_currency=currency,
                counterparty_name=name,
                counterparty_account=number,
                bank_reference=ref,
                operation_type=kind,
                deleted_flag=deleted,
            )
        return existing

    def _work_description(self, line_id):
        """What the accountant did to a protected line, in the reader's words."""
        return self.env["account.bank.statement.line"]._bank_sync_describe_work(
            self.user_work.get(line_id, ("reconciled",))
        )

    def _decimal(self, value):
        """A stored amount (a float column) as the Decimal the bank sent."""
        return Decimal(str(round(value or 0.0, self.currency.decimal_places)))

    def _twin_candidates(self, operations):
        """Lines of the journal that no sync created, near the page's new operations."""
        if not operations:
            return []
        window = timedelta(days=self.sync.DEFAULT_TWIN_WINDOW_DAYS)
        first = min(tx.booking_date for _k, tx in operations) - window
        last = max(tx.booking_date for _k, tx in operations) + window + timedelta(days=1)
        # internal_index starts with the line's date: this range walks the journal's own index.
        self.cr.execute(
            """
            SELECT l.id, m.date, l.amount, l.payment_ref, m.ref
              FROM account_bank_statement_line l
              JOIN account_move m ON m.id = l.move_id
             WHERE l.journal_id = %s AND l.company_id = %s
               AND l.internal_index >= %s AND l.internal_index < %s
               AND l.bank_sync_key IS NULL AND m.state = 'posted'
               AND l.amount = ANY(%s)
            """,
            [
                self.journal.id,
                self.company.id,
                first.strftime("%Y%m%d"),
                last.strftime("%Y%m%d"),
                list({tx.amount for _k, tx in operations}),
            ],
        )
        return [
            self.sync.TwinCandidate(
                line_id=row[0],
                date=row[1],
                amount=self._decimal(row[2]),
                label=row[3] or "",
                reference=row[4],
            )
            for row in self.cr.fetchall()
        ]

    def _create_lines(self, operations):
        if not operations:
            return
        twins = self.sync.match_twins(operations, self._twin_candidates(operations))
        StLine = self.env["account.bank.statement.line"].with_context(**LINE_CONTEXT)
        for key, line_id in twins.adopt.items():
            tx = dict(operations)[key]
            StLine.browse(line_id).write(
                {
                    "bank_sync_key": key,
                    "bank_sync_account_id": self.account.id,
                    "bank_sync_status": "booked",
                    "bank_sync_booking_date": tx.booking_date,
                    "bank_sync_value_date": tx.value_date,
                    "bank_sync_baseline": self.sync.baseline(tx),
                    "transaction_details": json_safe(tx.raw),
                }
            )
        self.counts["adopted_count"] += len(twins.adopt)
        new = [(key, tx) for key, tx in operations if key not in twins.adopt]
        by_iban, by_name = StLine._bank_sync_partner_index(
            self.company,
            {sanitize_account_number(tx.counterparty_account) for _k, tx in new} - {""},
            {tx.counterparty_name for _k, tx in new if tx.counterparty_name},
        )
        statements = self._statements({tx.booking_date for _k, tx in new})
        vals_list = []
        for key, tx in new:
            vals = self._line_values(key, tx)
            partner_id = by_iban.get(sanitize_account_number(tx.counterparty_account)) or (
                by_name.get(tx.counterparty_name)
            )
            if partner_id:
                vals["partner_id"] = partner_id
            statement = statements.get(
                self.sync.statement_period(tx.booking_date, self.account.statement_grouping)
            )
            if statement:
                vals["statement_id"] = statement
            if key in twins.ambiguous:
                vals["bank_sync_to_review"] = True
                vals["bank_sync_review_note"] = self.env._(
                    "This operation may already be in the journal as line(s) %(lines)s: "
                    "check and delete the duplicate.",
                    lines=", ".join(str(i) for i in twins.ambiguous[key]),
                )
            vals_list.append(vals)
        StLine.create(vals_list)
        self.counts["created_count"] += len(vals_list)
        self.counts["review_count"] += len(twins.ambiguous)

    def _line_values(self, key, tx):
        vals = {
            "journal_id": self.journal.id,
            "date": tx.booking_date,
            "payment_ref": tx.label or "/",
            "amount": float(tx.amount),
            "ref": tx.bank_reference or False,
            "partner_name": tx.counterparty_name or False,
            "account_number": tx.counterparty_account or False,
            "transaction_type": tx.operation_type or False,
            "bank_sync_key": key,
            "bank_sync_account_id": self.account.id,
            "bank_sync_status": "booked",
            "bank_sync_booking_date": tx.booking_date,
            "bank_sync_value_date": tx.value_date or False,
            "bank_sync_baseline": self.sync.baseline(tx),
            "transaction_details": json_safe(tx.raw),
        }
        if tx.foreign_currency:
            vals["foreign_currency_id"] = self._currency_id(tx.foreign_currency)
            vals["amount_currency"] = float(tx.foreign_amount)
        else:
            vals.update(foreign_currency_id=False, amount_currency=0.0)
        return vals

    def _statement_for(self, day):
        """The statement of ``day``'s period (made when missing), or None without grouping."""
        period = self.sync.statement_period(day, self.account.statement_grouping)
        return self._statements({day}).get(period) if period else None

    def _statements(self, dates):
        """Statement id per period of the page (created when missing), for the grouping."""
        grouping = self.account.statement_grouping
        periods = {self.sync.statement_period(day, grouping) for day in dates} - {None}
        if not periods:
            return {}
        prefix = f"bank_sync:{self.account.id}:"
        Statement = self.env["account.bank.statement"]
        found = Statement.search_fetch(
            [("reference", "in", [prefix + p for p in periods])], ["reference"]
        )
        result = {st.reference.removeprefix(prefix): st.id for st in found}
        missing = sorted(periods - set(result))
        if missing:
            created = Statement.create(
                [
                    {
                        "name": f"{self.journal.code} {period}",
                        "reference": prefix + period,
                        "journal_id": self.journal.id,
                    }
                    for period in missing
                ]
            )
            result.update(zip(missing, created.ids, strict=True))
        return result

    def _update_line(self, change):
        """Mirror the bank's change on a line that carries none of the accountant's work: the
        fields the bank changed, nothing else (what a person typed on the line stays).

        A new date in another period of the journal's numbering (31 December to 1 January)
        cannot be written on a posted entry: the line is created again in its new period
        instead. A locked period is never touched: the line is flagged, once.
        """
        tx = change.transaction
        StLine = self.env["account.bank.statement.line"].with_context(**LINE_CONTEXT)
        line = StLine.browse(change.line_id)
        full = self._line_values(change.key, tx)
        names = {"bank_sync_baseline", "transaction_details"}
        for field_name in change.changes:
            names.update(LINE_FIELDS_OF_CHANGE[field_name])
        vals = {name: full[name] for name in names}
        old_statement = line.statement_id
        if "booking_date" in change.changes:
            vals["statement_id"] = self._statement_for(tx.booking_date) or False
        try:
            with self.cr.savepoint():
                line.write(vals)
        except (UserError, ValidationError) as error:
            if "booking_date" not in change.changes or self._period_locked(tx.booking_date):
                self._flag(change.line_id, self._describe_failed_change(change, error), baseline=tx)
                return
            try:
                with self.cr.savepoint():
                    kept = {
                        name: line[name]
                        for name in ("payment_ref", "ref", "partner_name", "account_number")
                        if name not in vals
                    }
                    partner = line.partner_id
                    line.unlink()
                    StLine.create({**full, **kept, **vals, "partner_id": partner.id})
            except (UserError, ValidationError) as second_error:
                self._flag(
                    change.line_id, self._describe_failed_change(change, second_error), baseline=tx
                )
                return
        if old_statement != line.exists().statement_id:
            self._drop_if_empty(old_statement)
        self.counts["updated_count"] += 1

    def _period_locked(self, day):
        return bool(self.company._get_violated_lock_dates(day, False, self.journal))

    def _drop_if_empty(self, statement):
        """A statement this synchronisation made for a period that no longer has any line."""
        prefix = f"bank_sync:{self.account.id}:"
        if statement and (statement.reference or "").startswith(prefix) and not statement.line_ids:
            statement.unlink()

    def _describe_failed_change(self, change, error):
        return self.env._(
            "The bank changed this operation, but the change could not be applied: %(error)s "
            "%(changes)s",
            error=str(error.args[0] if error.args else error),
            changes=self._describe_changes(change),
        )

    def _describe_changes(self, change):
        """The bank's changes in the reader's words: "Label: old → new"."""
        names = {
            "label": self.env._("Label"),
            "booking_date": self.env._("Date"),
            "amount": self.env._("Amount"),
            "value_date": self.env._("Value date"),
            "foreign_amount": self.env._("Amount in foreign currency"),
            "foreign_currency": self.env._("Foreign currency"),
            "counterparty_name": self.env._("Counterparty"),
            "counterparty_account": self.env._("Counterparty account"),
            "bank_reference": self.env._("Reference"),
            "operation_type": self.env._("Operation type"),
        }
        parts = []
        for name, (old, new) in change.changes.items():
            before, after = self._readable(old), self._readable(new)
            parts.append(f"{names.get(name, name)}: {before} → {after}")
        return "; ".join(parts) + "."

    def _readable(self, value):
        if value is None or value == "":
            return "-"
        if isinstance(value, Decimal):
            return formatLang(self.env, float(value), currency_obj=self.currency)
        if hasattr(value, "isoformat"):
            return format_date(self.env, value)
        return str(value)

    def _flag(self, line_id, note, status=None, baseline=None):
        """Ask a person to look at a line, once: with ``baseline`` (the bank's operation as
        the question describes it), a later sighting of the same operation is not news."""
        line = self.env["account.bank.statement.line"].with_context(**LINE_CONTEXT).browse(line_id)
        vals = {"bank_sync_to_review": True, "bank_sync_review_note": note}
        if status:
            vals["bank_sync_status"] = status
        if all(line[name] == value for name, value in vals.items()):
            return
        if baseline is not None:
            vals["bank_sync_baseline"] = self.sync.baseline(baseline)
        line.write(vals)
        self.counts["review_count"] += 1

    # ------------------------------------------------------------------ reading again

    def _import_again(self):
        """Read the aggregator again into the same run; returns ``(finished, changes)``, the
        number of lines it created, adopted, updated, deleted or flagged.

        What it merely saw again is not counted a second time (fetched, skipped), and the
        run keeps the window it was started for.
        """
        before = dict(self.counts)
        window = {name: self.run[name] for name in ("window_basis", "date_from", "date_to")}
        finished = self._import()
        self.run.write(window)
        actions = ("created_count", "adopted_count", "updated_count", "deleted_count")
        changed = {name: self.counts[name] - before[name] for name in actions}
        flagged = self.counts["review_count"] - before["review_count"]
        for name in ("pages", "skipped_count", "pending_count", "ignored_count", "reread_count"):
            self.counts[name] = before[name]
        self.counts["fetched_count"] = before["fetched_count"] + sum(changed.values())
        self.run.write(self.counts)
        return finished, sum(changed.values()) + flagged

    def _reread(self, date_from):
        """Read every operation booked since ``date_from`` again, by date, into the run;
        returns ``(finished, changes)`` (see :meth:`_import_again`).

        An incremental read (by update time) cannot see operations the aggregator stamped
        late, nor those a paginated read had passed when they appeared: a read by date does.
        It stores no cursor and leaves the run's window alone.
        """
        self.date_from = date_from
        self.date_to = fields.Date.context_today(self.account)
        self.late_reread = True
        try:
            return self._import_again()
        finally:
            self.late_reread = False
            self.date_from = self.date_to = None

    def reread_recent(self, run):
        """Read the last ``RECENT_REREAD_DAYS`` days again by date, into ``run`` (the journal
        differs from the bank: late operations are the usual cause); returns how many lines
        it created, updated, deleted or flagged."""
        account = self.account
        if not self.lock():
            return 0
        try:
            today = fields.Date.context_today(account)
            start = today - timedelta(days=RECENT_REREAD_DAYS)
            self.run = run
            self.counts = {name: run[name] for name in self.counts}
            with self.cr.savepoint():
                _finished, changes = self._reread(max(start, account.history_start_date or start))
            return changes
        # The balance check goes on without it; the alert says what differs.
        except Exception as error:  # pylint: disable=broad-except
            _logger.info("Re-reading account %s for late operations failed: %s", account.id, error)
            return 0
        finally:
            self.unlock()

    # ------------------------------------------------------------------ opening line

    def _history_start(self):
        """The account's history start date, else the first operation imported."""
        if self.account.history_start_date:
            return self.account.history_start_date
        self.cr.execute(
            "SELECT MIN(bank_sync_booking_date) FROM account_bank_statement_line "
            "WHERE bank_sync_account_id = %s AND journal_id = %s",
            [self.account.id, self.journal.id],
        )
        return self.cr.fetchone()[0] or fields.Date.context_today(self.account)

    def _needs_opening(self):
        account = self.account
        return (
            account.sync_needs_opening
            and account.sync_history_complete
            and self.trigger != "forced"
            and not self.late_reread
        )

    def _settle_opening(self):
        """Make the journal start at the bank's balance, after a first import read to its end.

        The opening line is the bank's balance now, minus the operations in the journal and
        those ignored for good. That holds only if the balance counts exactly the operations
        the journal holds, whatever path the import took (pages that moved while it read
        them, operations stamped late): after reading the balance, the whole history is read
        again by date; when that brings nothing new, the balance is known to count exactly
        what the journal holds, otherwise the balance is read again (``OPENING_ATTEMPTS``
        times, then the next run tries). Returns ``(note for the run or None, whether the
        history was read to its end)``: a time budget may stop the re-read, the background
        job then continues.
        """
        account = self.account
        connection = account.connection_id
        for _attempt in range(OPENING_ATTEMPTS):
            try:
                banks = self.provider.list_accounts(connection.remote_id)
            # The import itself succeeded: the opening simply waits for the next run.
            except Exception as error:  # pylint: disable=broad-except
                note = self.env._(
                    "The bank's balance could not be read, so the opening balance waits for "
                    "the next synchronisation: %(error)s",
                    error=getattr(error, "message", None) or str(error),
                )
                return note, True
            bank = next((b for b in banks if b.remote_id == account.remote_id), None)
            if bank is None or bank.balance is None:
                note = self.env._(
                    "The aggregator gave no balance for this account: the opening balance "
                    "waits for the next synchronisation."
                )
                return note, True
            finished, changes = self._reread(self._history_start())
            if not finished:
                return None, False
            if not changes:
                if create_opening_line(account, bank.balance):
                    self.counts["created_count"] += 1
                return None, True
        note = self.env._(
            "The bank's operations kept changing while its balance was read: the opening "
            "balance will be set by the next synchronisation."
        )
        return note, True


def ignored_total(account, currency):
    """``(sum, count)`` of the operations of ``account`` ignored for good: they are still in
    the bank's balance, never in the journal."""
    ignored = account.env["bank.sync.ignored"].sudo().search([("account_id", "=", account.id)])
    return (
        sum(
            (
                Decimal(str(round(amount, currency.decimal_places)))
                for amount in ignored.mapped("amount")
            ),
            Decimal(0),
        ),
        len(ignored),
    )


def create_opening_line(account, bank_balance):
    """The first import of an empty journal is complete: one line, dated the day before the
    history start, makes the journal's balance the bank's (see ``_settle_opening`` for when
    ``bank_balance`` may be used). Returns the line (empty when no line is needed).
    """
    from bank_sync_bridge import sync  # noqa: PLC0415

    env = account.env
    account = account.sudo()
    account.write({"sync_needs_opening": False, "sync_opening_done": True})
    journal = account.journal_id
    currency = journal.currency_id or account.company_id.currency_id
    amount = sync.opening_amount(
        aggregator_balance=bank_balance,
        imported_total=journal_balance(env, journal),
        account_type=account.account_type or "checking",
        pending_total=ignored_total(account, currency)[0],
        digits=currency.decimal_places,
    )
    StLine = env["account.bank.statement.line"].with_context(**LINE_CONTEXT)
    key = f"opening:{account.id}"
    previous = StLine.search([("journal_id", "=", journal.id), ("bank_sync_key", "=", key)])
    if previous:
        # The account came back to this journal: its opening line takes the difference.
        if amount:
            previous.amount += float(amount)
        return previous
    if not amount:
        return StLine
    start = account.history_start_date
    if not start:
        env.cr.execute(
            "SELECT MIN(bank_sync_booking_date) FROM account_bank_statement_line "
            "WHERE bank_sync_account_id = %s",
            [account.id],
        )
        start = env.cr.fetchone()[0] or fields.Date.context_today(account)
    day = start - timedelta(days=1)
    return StLine.create(
        {
            "journal_id": journal.id,
            "date": day,
            "payment_ref": env._("Opening balance"),
            "amount": float(amount),
            "bank_sync_key": key,
            "bank_sync_account_id": account.id,
            "bank_sync_status": "opening",
            "bank_sync_booking_date": day,
        }
    )


# No join: right after a big first import the planner's statistics are stale, and a join
# planned on them was seen to take seconds. The journal's few moves that are not posted
# (cancelled by the audit trail) are excluded through one small hashed subquery, which the
# partial index UNPOSTED_MOVE_INDEX answers. Parameters: the journal's id, twice.
JOURNAL_BALANCE_SQL = """
    SELECT COALESCE(SUM(l.amount), 0)
      FROM account_bank_statement_line l
     WHERE l.journal_id = %s
       AND l.move_id NOT IN (
           SELECT m.id FROM account_move m WHERE m.journal_id = %s AND m.state != 'posted'
       )
"""


def journal_balance(env, journal):
    """Sum of the posted statement lines of ``journal`` (in the journal's currency)."""
    env.cr.execute(JOURNAL_BALANCE_SQL, [journal.id, journal.id])
    # Amounts are stored as floats: sum, then read back at cent precision.
    return Decimal(str(round(env.cr.fetchone()[0], journal.currency_id.decimal_places or 2)))


def sync_connection_accounts(accounts, trigger, provider=None, **kwargs):
    """Sync ``accounts`` grouped by connection: one client each, then one balance read each.

    One connection's failure (even building its client) is recorded on its runs; the other
    connections go on. Returns the runs.
    """
    env = accounts.env
    runs = env["bank.sync.run"]
    budget = kwargs.pop("time_budget", None)
    started = time.monotonic()
    for connection in accounts.connection_id:
        group = accounts.filtered(lambda a, c=connection: a.connection_id == c)
        try:
            client = provider or connection.provider_id._get_provider()
        # Recorded on the runs of this connection; the other connections go on.
        except Exception as error:  # pylint: disable=broad-except
            for account in group:
                runs |= _failed_run(account, trigger, error)
            continue
        finished = env["bank.sync.run"]
        for account in group:
            left = None
            if budget is not None:
                # Each later account still gets a little time (at most the whole budget).
                left = max(budget - (time.monotonic() - started), min(budget, 0.5))
            run = AccountSynchroniser(
                account, trigger=trigger, provider=client, time_budget=left, **kwargs
            ).execute()
            runs |= run
            if run.state == "done":
                finished |= run
        if finished:
            _check_balances(connection, finished, client, commit=kwargs.get("commit"))
    # Whoever asked (daily job, Sync now, forced sync, webhook): a 429 resumes when the
    # aggregator allows, a passing failure is retried later by the background job.
    accounts._schedule_retries(runs)
    return runs


def _failed_run(account, trigger, error):
    from bank_sync_bridge.errors import BankSyncError  # noqa: PLC0415

    account.sudo().sync_last_attempt = fields.Datetime.now()
    if isinstance(error, BankSyncError | UserError):
        message = getattr(error, "message", None) or str(error.args[0])
    else:
        _logger.exception("Cannot build the aggregator client of account %s", account.id)
        message = str(error)
    return (
        account.env["bank.sync.run"]
        .sudo()
        .create(
            {
                "account_id": account.id,
                "journal_id": account.journal_id.id,
                "trigger": trigger,
                "state": "failed",
                "end_date": fields.Datetime.now(),
                "error": message,
                "error_type": type(error).__name__,
            }
        )
    )


def compare_with_bank(account, bank_balance):
    """The journal of ``account`` against the bank's balance: ``(check, ignored amount,
    ignored count)``. Operations deleted with "ignore permanently" are still in the bank's
    balance but never in the journal: the journal is expected to differ by exactly them."""
    from bank_sync_bridge import sync  # noqa: PLC0415

    currency = account.journal_id.currency_id or account.company_id.currency_id
    amount, count = ignored_total(account, currency)
    check = sync.check_balance(
        aggregator_balance=bank_balance,
        journal_balance=journal_balance(account.env, account.journal_id),
        account_type=account.account_type or "checking",
        pending_total=amount,
        digits=currency.decimal_places,
    )
    return check, amount, count


def _check_balances(connection, runs, provider, commit=None):
    """Read the connection's balances once and compare each synced journal with its bank."""
    env = connection.env
    try:
        remote = {a.remote_id: a for a in provider.list_accounts(connection.remote_id)}
    # The import itself succeeded: a failing balance read only leaves a note.
    except Exception as error:  # pylint: disable=broad-except
        runs.write(
            {
                "note": env._(
                    "The balance could not be checked: %(error)s",
                    error=getattr(error, "message", None) or str(error),
                )
            }
        )
        return
    for run in runs:
        account = run.account_id.sudo()
        bank = remote.get(account.remote_id)
        if bank is None or bank.balance is None:
            continue
        currency = account.journal_id.currency_id or account.company_id.currency_id
        notes = [run.note] if run.note else []
        if account.sync_needs_opening:
            # The first import is not complete: the journal has no opening balance yet.
            account.write({"balance": float(bank.balance), "balance_date": fields.Datetime.now()})
            notes.append(
                env._(
                    "The journal is compared with the bank's balance once the first import "
                    "is complete and its opening balance is set."
                )
            )
            run.write({"note": "\n".join(notes)})
            continue
        check, ignored_amount, ignored_count = compare_with_bank(account, bank.balance)
        if not check.ok:
            # Operations stamped late by the aggregator escape incremental reads: read the
            # recent weeks again by date before telling anyone.
            found = AccountSynchroniser(
                account, trigger=run.trigger, provider=provider
            ).reread_recent(run)
            if found:
                notes.append(
                    env._(
                        "The journal differed from the bank: the last %(days)s days were read "
                        "again and %(count)s late change(s) were imported.",
                        days=RECENT_REREAD_DAYS,
                        count=found,
                    )
                )
                check, ignored_amount, ignored_count = compare_with_bank(account, bank.balance)
        account.write(
            {
                "balance": float(bank.balance),
                "balance_date": fields.Datetime.now(),
                "balance_difference": float(check.difference),
                "balance_check_date": fields.Datetime.now(),
            }
        )
        vals = {
            "balance_checked": True,
            "balance_aggregator": float(check.expected),
            "balance_journal": float(check.journal),
            "balance_difference": float(check.difference),
        }

        def money(amount, currency=currency):
            return formatLang(env, float(amount), currency_obj=currency)

        if ignored_count:
            notes.append(
                env._(
                    "The bank's balance (%(bank)s) still counts %(count)s operation(s) you "
                    "ignored permanently (%(ignored)s): the journal should show %(expected)s.",
                    bank=money(check.expected + ignored_amount),
                    count=ignored_count,
                    ignored=money(ignored_amount),
                    expected=money(check.expected),
                )
            )
        if not check.ok:
            notes.append(
                env._(
                    "The journal balance (%(journal)s) differs from the expected balance "
                    "(%(bank)s) by %(difference)s.",
                    journal=money(check.journal),
                    bank=money(check.expected),
                    difference=money(check.difference),
                )
            )
        if notes:
            vals["note"] = "\n".join(notes)
        run.write(vals)
        _balance_alert(account, check, currency, money)
    if commit if commit is not None else (runs[:1].trigger == "cron" and not in_test_mode()):
        env.cr.commit()  # pylint: disable=invalid-commit


def _balance_alert(account, check, currency, money):
    """A real difference alerts the accounting managers once (an activity each on the
    connection); the activities are closed when the balances agree again."""
    env = account.env
    connection = account.connection_id.sudo()
    previous = account.balance_alert_difference
    if check.ok:
        if previous:
            account.balance_alert_difference = 0.0
            activities = (
                env["mail.activity"]
                .sudo()
                .search(
                    [
                        ("res_model", "=", "bank.sync.connection"),
                        ("res_id", "=", connection.id),
                        ("activity_type_id", "=", env.ref("mail.mail_activity_data_warning").id),
                        ("summary", "ilike", account.display_name),
                    ]
                )
            )
            activities.action_feedback(
                feedback=env._("The journal balance agrees with the bank's again.")
            )
        return
    if currency.compare_amounts(previous, float(check.difference)) == 0:
        return  # this difference was already reported
    account.balance_alert_difference = float(check.difference)
    for user in connection._health_alert_users():
        mine = env(context=dict(env.context, lang=user.lang or "en_US"))
        summary = mine._(
            "%(account)s: balance differs from the bank's by %(difference)s",
            account=account.with_env(mine).display_name,
            difference=formatLang(mine, float(check.difference), currency_obj=currency),
        )
        connection.with_context(
            lang=user.lang or "en_US", mail_activity_quick_update=True
        ).activity_schedule(
            "mail.mail_activity_data_warning",
            summary=summary,
            note=mine._(
                "Journal balance %(journal)s, expected %(expected)s: check the bank operations "
                "of the journal (missing, duplicated or deleted without being ignored).",
                journal=formatLang(mine, float(check.journal), currency_obj=currency),
                expected=formatLang(mine, float(check.expected), currency_obj=currency),
            ),
            user_id=user.id,
        )


def cron_sync(accounts_model, batch_size=20):
    """One batch of the daily job; reports progress and asks to be called again if needed."""
    env = accounts_model.env
    Account = accounts_model.sudo()
    cutoff = fields.Datetime.now() - DAILY_INTERVAL
    due = Account.search(
        [
            *Account._domain_syncable(),
            "|",
            "|",
            ("sync_requested", "=", True),
            ("sync_last_attempt", "=", False),
            ("sync_last_attempt", "<", cutoff),
        ],
        order="sync_requested desc, sync_last_attempt asc nulls first, id",
    )
    # Spread under the aggregators' published rate limits; a 429 backs off and resumes.
    batch, next_at = Account._rate_limited_batch(due, batch_size)
    if batch:
        runs = env["bank.sync.run"]
        # A run asked for by a webhook (or the rest of a "sync now") says so in the history;
        # the groups are made before any run clears its account's request.
        groups = {}
        for account in batch:
            trigger = (account.sync_requested and account.sync_requested_trigger) or "cron"
            groups[trigger] = groups.get(trigger, account.browse()) | account
        for trigger, group in groups.items():
            # In the background job, whatever the trigger: a commit per page.
            runs |= group._sync_accounts(trigger, commit=not in_test_mode())
    remaining = len(due) - len(batch)
    env["ir.cron"]._notify_progress(done=len(batch), remaining=remaining)
    if remaining:
        env.ref("bank_sync_aggregator.ir_cron_bank_sync")._trigger(at=next_at)
    return batch

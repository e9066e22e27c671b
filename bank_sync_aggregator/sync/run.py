"""The run lifecycle: one synchronisation of one account, from its lock to its record.

:class:`AccountSynchroniser` takes the account's lock, opens (or resumes) its
``bank.sync.run``, plans the window (a stored cursor, the history start, or the user's dates),
streams the aggregator's pages and has each applied (:mod:`.pages`), stores the cursor with the
lines of its page, commits page by page in the background job, settles the opening line
(:mod:`.balance`), and closes the run, or records why it failed. The entry points:

- :func:`sync_connection_accounts`: accounts grouped by connection, one client and one
  balance read each (:func:`.balance.check_balances`), then the retries scheduled;
- :func:`cron_sync`: one batch of the daily job, spread under the aggregators' rate limits.
"""

import json
import logging
import time
from dataclasses import replace
from datetime import timedelta

import psycopg2

from odoo import fields, sql_db
from odoo.exceptions import UserError

from bank_sync_bridge.errors import BankSyncError
from bank_sync_bridge.sync import Cursor, plan_window

from ..utils import comes_from_aggregator, in_test_mode
from .balance import (
    OpeningBalance,
    check_balances,
    extend_history,
    history_extension_refusal,
)
from .pages import PageApplier

_logger = logging.getLogger(__name__)

#: Seconds "Sync now" imports while the user waits; the background job does the rest.
SYNC_NOW_BUDGET = 4.0

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
#: First key of the transaction-level advisory lock an import's own transaction holds until
#: it ends (the second is the account's id): "bsnf" in ASCII. A "Sync now" releases the
#: account's lock when its run is closed, but its request commits later: a worker that took
#: the account in between would read a cursor about to move and stored pages about to appear.
ACCOUNT_TRANSACTION_LOCK_NAMESPACE = 0x62736E66


class AccountSynchroniser(PageApplier, OpeningBalance):
    """Imports one account's operations into its journal for one run."""

    def __init__(
        self,
        account,
        *,
        trigger,
        client=None,
        date_from=None,
        date_to=None,
        time_budget=None,
        commit=None,
    ):
        self.account = account
        self.env = account.env
        self.cr = account.env.cr
        self.trigger = trigger
        self.client = client
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
                "reconciled_count",
                "suggested_count",
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
        closes it and the lock goes with it. The import's own transaction also holds a
        transaction-level lock until it ends (``ACCOUNT_TRANSACTION_LOCK_NAMESPACE``): a run
        closed but not committed yet keeps the account too. Nothing waits: the other worker
        records a "skipped" run.

        Advisory locks belong to a database session: behind a connection pooler, use its
        session mode (PgBouncer's transaction mode would hand the lock to other clients).
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
        if locked:
            # Any other transaction that imported this account has ended (re-entrant: this
            # transaction may have imported it already).
            self.cr.execute(
                "SELECT pg_try_advisory_xact_lock(%s, %s)",
                [ACCOUNT_TRANSACTION_LOCK_NAMESPACE, self.account.id],
            )
            locked = self.cr.fetchone()[0]
        if not locked:
            connection.close()
            return False
        self.lock_connection = connection
        return True

    def unlock(self):
        """Release the account. The lock is released explicitly before its connection is
        closed: PostgreSQL ends a closed session in the background, and until it has, the
        account would still look taken to the next synchronisation (skipped for nothing)."""
        connection, self.lock_connection = self.lock_connection, None
        if connection is None:
            return
        try:
            with connection.cursor() as cr:
                cr.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", [ACCOUNT_LOCK_NAMESPACE, self.account.id]
                )
        except psycopg2.Error:
            _logger.info("The lock of account %s goes with its connection", self.account.id)
        finally:
            connection.close()

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
        try:
            self._start_run()
            self._run()
            if self.commit:
                # The daily job's own transaction boundary (never in tests, see ``commit``),
                # before the lock goes: another worker finds the run closed and the cursor
                # where this one left it.
                self.cr.commit()  # pylint: disable=invalid-commit
        finally:
            self.unlock()
        return self.run

    def _start_run(self):
        """The run this synchronisation records into: the one a "Sync now" or a forced run
        left to the background job, or a new one."""
        account = self.account
        Run = self.env["bank.sync.run"].sudo()
        # Holding the locks proves no other run is alive: a run still "running" was killed.
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
        self._close("failed")
        self.run.write(failure_values(self.account, error))
        if comes_from_aggregator(error):
            # The health policy decides: an action needed alerts at once, a temporary failure
            # only once it lasts, a rate limit never. A window we planned badly is no news
            # about the bank.
            self.account.connection_id.sudo()._record_sync_error(error)

    # ------------------------------------------------------------------ window

    def _plan(self):
        account = self.account
        today = fields.Date.context_today(account)
        if self.late_reread:
            return plan_window(
                today=today, forced_from=self.date_from, forced_to=self.date_to, forced=True
            )
        forced_state = json.loads(account.sync_forced_state) if account.sync_forced_state else {}
        cursor = None
        if self.date_from:
            date_from, date_to = self.date_from, self.date_to
            if forced_state and self.trigger == "forced":
                # A range still waiting to finish is read with the new one, from the earlier
                # start to the later end, from the beginning (what is already in the journal
                # is recognised): dropped, the lines it created before the history start
                # would stay there without the history start moving to them.
                date_from = min(date_from, fields.Date.to_date(forced_state["date_from"]))
                date_to = max(date_to or today, fields.Date.to_date(forced_state["date_to"]))
        elif forced_state and self.trigger == "forced":
            # A forced run that continues in the background (or is retried): same window, its
            # own cursor. Any other run (Sync now, the daily import) does its own job and
            # leaves it waiting.
            date_from = fields.Date.to_date(forced_state["date_from"])
            date_to = fields.Date.to_date(forced_state["date_to"])
            cursor = Cursor.loads(forced_state.get("cursor"))
        else:
            # (a forced run without dates fails below with a clear message)
            date_from, date_to = None, self.date_to
        if date_from or date_to or self.trigger == "forced":
            refusal = date_from and history_extension_refusal(account, date_from)
            if refusal:
                raise UserError(refusal)
            start = account.history_start_date
            if date_from and start and date_from < start and account.sync_history_complete:
                # Earlier than the history start: read up to it, whatever the range's end,
                # so that the opening line can give up every operation it stood for.
                date_to = max(date_to or today, start - timedelta(days=1))
            window = plan_window(today=today, forced_from=date_from, forced_to=date_to, forced=True)
            window = replace(window, cursor=cursor)
            account.sudo().sync_forced_state = json.dumps(
                {
                    "date_from": str(window.date_from),
                    "date_to": str(window.date_to),
                    "cursor": cursor.dumps() if cursor else None,
                }
            )
        else:
            stored = Cursor.loads(account.sync_cursor)
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
            window = plan_window(
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
        client = self.client = self.client or account.connection_id.provider_id._get_client()
        pages = client.iter_transactions(
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
            extend_history(self.account, window.date_from)
        else:
            # Every operation since the history start has been read once (from the history
            # start, then from the cursors of the same stream): from now on a lost cursor
            # may start from the last imported date. The opening line of a first import
            # waits for this (``_settle_opening``).
            self.account.sudo().sync_history_complete = True

    # ------------------------------------------------------------------ budget and statistics

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


def sync_connection_accounts(accounts, trigger, client=None, **kwargs):
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
            connection_client = client or connection.provider_id._get_client()
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
                account, trigger=trigger, client=connection_client, time_budget=left, **kwargs
            ).execute()
            runs |= run
            if run.state == "done":
                finished |= run
        if finished:
            check_balances(
                connection,
                finished,
                connection_client,
                reread=lambda account, run, client=connection_client: AccountSynchroniser(
                    account, trigger=run.trigger, client=client, commit=False
                ).reread_recent(run),
                commit=kwargs.get("commit"),
            )
    # Whoever asked (daily job, Sync now, forced sync, webhook): a 429 resumes when the
    # aggregator allows, a passing failure is retried later by the background job.
    accounts._schedule_retries(runs)
    return runs


def failure_values(account, error):
    """What the run of ``account`` that failed on ``error`` records: the error in words for
    people, its class for support, and whether trying again later may succeed by itself (the
    package's own ``retryable``, which the retries decide on)."""
    if isinstance(error, BankSyncError | UserError):
        message = getattr(error, "message", None) or str(error.args[0] if error.args else "")
    else:
        _logger.exception("Bank synchronisation of account %s failed", account.id)
        message = account.env._("Unexpected error: %(error)s", error=error)
    return {
        "error": message,
        "error_type": type(error).__name__,
        "error_retryable": isinstance(error, BankSyncError) and error.retryable,
    }


def _failed_run(account, trigger, error):
    """The failed run of an account whose connection's client could not even be built."""
    account.sudo().sync_last_attempt = fields.Datetime.now()
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
                **failure_values(account, error),
            }
        )
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

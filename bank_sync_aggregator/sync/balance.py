"""The balance check: the journal against the bank's balance.

- The opening line (:class:`OpeningBalance`, :func:`create_opening_line`): when a first import
  of an empty journal is complete, one line makes the journal start at the bank's balance. A
  forced synchronisation that reads earlier operations moves it back with the history start
  (:func:`extend_history`), or is refused when it cannot (:func:`history_extension_refusal`).
- After every run, :func:`check_balances` reads each connection's balances once and compares
  every synced journal with its bank (:func:`compare_with_bank`: operations ignored for good
  are still in the bank's balance, never in the journal). A difference first has the recent
  weeks read again by date (:meth:`OpeningBalance.reread_recent`: operations stamped late
  escape incremental reads); one that remains alerts the accounting managers once
  (:func:`_balance_alert`).
"""

import logging
from datetime import timedelta
from decimal import Decimal

from odoo import fields
from odoo.exceptions import UserError, ValidationError
from odoo.tools.misc import format_date, formatLang

from bank_sync_bridge.sync import check_balance, opening_amount

from ..const import LINE_CONTEXT
from ..utils import in_test_mode

_logger = logging.getLogger(__name__)

#: Times the opening line waits for the aggregator to stay still between its balance and a
#: re-read of what changed, within one run; the next run tries again.
OPENING_ATTEMPTS = 3

#: When the journal starts to differ from the bank, this many days are read again by date
#: (operations stamped late escape an incremental read) before anyone is alerted.
RECENT_REREAD_DAYS = 31


class OpeningBalance:
    """The balance side of
    :class:`~odoo.addons.bank_sync_aggregator.sync.run.AccountSynchroniser`: the opening line
    of a first import, and reading recent weeks again when the journal differs from the bank.

    Both read the aggregator again through the synchroniser's ``_reread`` (into the same run)
    and use its ``client``, ``counts``, ``lock`` and ``unlock``.
    """

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
            # Inside a savepoint, nothing may commit (a commit would end the savepoint, and
            # the check after it would fail): the caller's transaction takes it all.
            self.commit = False
            with self.cr.savepoint():
                _finished, changes = self._reread(max(start, account.history_start_date or start))
            return changes
        # The balance check goes on without it; the alert says what differs.
        except Exception as error:  # pylint: disable=broad-except
            _logger.info("Re-reading account %s for late operations failed: %s", account.id, error)
            return 0
        finally:
            self.unlock()

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
                banks = self.client.list_accounts(connection.remote_id)
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
    env = account.env
    account = account.sudo()
    account.write({"sync_needs_opening": False, "sync_opening_done": True})
    journal = account.journal_id
    currency = journal.currency_id or account.company_id.currency_id
    amount = opening_amount(
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
        # The account came back to this journal: its opening line takes the difference,
        # unless a person worked on it (the balance check then shows what differs).
        if amount and not previous._bank_sync_user_work(previous.ids):
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


def opening_line(account):
    """The opening line of ``account`` in its journal (empty when there is none)."""
    return (
        account.env["account.bank.statement.line"]
        .sudo()
        .search(
            [
                ("journal_id", "=", account.journal_id.id),
                ("bank_sync_key", "=", f"opening:{account.id}"),
            ]
        )
    )


def history_extension_refusal(account, date_from):
    """Why a forced synchronisation from ``date_from`` may not read operations before the
    account's history start, or None when it may (the opening line then moves back with the
    history start, see :func:`extend_history`).

    The opening line stands for everything before the history start: operations read earlier
    must leave it, which cannot be when a person worked on it (reconciled it, wrote on it) or
    its period is locked; and a journal that held operations of its own before the
    synchronisation has no opening line, its earlier months being the user's own entries.
    """
    start = account.history_start_date
    if not start or date_from >= start or not account.sync_history_complete:
        return None  # (a first import not complete yet simply starts earlier)
    env = account.env
    shown = {"account": account.display_name, "start": format_date(env, start)}
    if not account.sync_opening_done:
        return env._(
            "%(account)s is synchronised from %(start)s into a journal that already held "
            "operations of its own before: earlier operations would count twice. Choose a "
            "range from %(start)s.",
            **shown,
        )
    opening = opening_line(account)
    journal = account.journal_id
    if opening and opening._bank_sync_user_work(opening.ids):
        return env._(
            "The opening balance of %(account)s (before %(start)s) is reconciled or annotated: "
            "it cannot take earlier operations. Choose a range from %(start)s, or revert its "
            "reconciliation first.",
            **shown,
        )
    for day in (date_from - timedelta(days=1), opening.date):
        if day and account.company_id._get_violated_lock_dates(day, False, journal):
            return env._(
                "Operations of %(account)s before %(start)s would fall in a locked period: "
                "choose a range from %(start)s.",
                **shown,
            )
    return None


def give_up_to_earlier_lines(account, created):
    """A forced synchronisation has just created ``created`` (statement lines), some dated
    before the history start: the opening line counted those in, and gives them up in the
    same transaction (the page's), so that the journal never counts an operation twice, even
    while the rest of the range waits for the background job or a new range replaces it.

    Only creations count: a line that was already in the journal when the opening line was
    set (moved before the history start by the bank since) was never in it. Refused with the
    reason when the opening line cannot change (worked on, locked): the page is then undone.
    """
    start = account.history_start_date
    earlier = created.filtered(lambda line: start and line.bank_sync_booking_date < start)
    if not earlier or not account.sync_opening_done:
        return
    refusal = history_extension_refusal(account, min(earlier.mapped("bank_sync_booking_date")))
    if refusal:
        raise UserError(refusal)
    journal = account.journal_id
    currency = journal.currency_id or account.company_id.currency_id
    amount = currency.round(sum(earlier.mapped("amount")))
    opening = opening_line(account)
    if opening:
        opening.with_context(**LINE_CONTEXT).write({"amount": opening.amount - amount})
        return
    # The bank's balance needed no opening line at the first import: it needs one now.
    day = start - timedelta(days=1)
    account.env["account.bank.statement.line"].with_context(**LINE_CONTEXT).sudo().create(
        {
            "journal_id": journal.id,
            "date": day,
            "bank_sync_booking_date": day,
            "amount": -amount,
            "payment_ref": account.env._("Opening balance"),
            "bank_sync_key": f"opening:{account.id}",
            "bank_sync_account_id": account.id,
            "bank_sync_status": "opening",
        }
    )


def extend_history(account, date_from):
    """A forced synchronisation has read every operation from ``date_from`` up to the history
    start: the history now starts at ``date_from``, and the opening line (which gave up those
    operations as they were created, :func:`give_up_to_earlier_lines`) moves to the day
    before. The journal still equals the bank."""
    start = account.history_start_date
    if not start or date_from >= start:
        return
    account = account.sudo()
    account.history_start_date = date_from
    opening = opening_line(account)
    if not account.sync_opening_done or not opening:
        return
    day = date_from - timedelta(days=1)
    vals = {"date": day, "bank_sync_booking_date": day}
    try:
        with account.env.cr.savepoint():
            opening.with_context(**LINE_CONTEXT).write(vals)
    except (UserError, ValidationError):
        # Moved into another year, a posted entry keeps its number's period: it is made
        # again there (nothing was done on it, history_extension_refusal checked).
        amount, label = opening.amount, opening.payment_ref
        opening.with_context(**LINE_CONTEXT).unlink()
        account.env["account.bank.statement.line"].with_context(**LINE_CONTEXT).create(
            {
                "journal_id": account.journal_id.id,
                "amount": amount,
                "payment_ref": label,
                "bank_sync_key": f"opening:{account.id}",
                "bank_sync_account_id": account.id,
                "bank_sync_status": "opening",
                **vals,
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
    # What the ORM still holds in memory counts too (an entry just cancelled, a line typed).
    env["account.bank.statement.line"].flush_model(["amount", "journal_id", "move_id"])
    env["account.move"].flush_model(["state", "journal_id"])
    env.cr.execute(JOURNAL_BALANCE_SQL, [journal.id, journal.id])
    # Amounts are stored as floats: sum, then read back at cent precision.
    return Decimal(str(round(env.cr.fetchone()[0], journal.currency_id.decimal_places or 2)))


def compare_with_bank(account, bank_balance):
    """The journal of ``account`` against the bank's balance: ``(check, ignored amount,
    ignored count)``. Operations deleted with "ignore permanently" are still in the bank's
    balance but never in the journal: the journal is expected to differ by exactly them."""
    currency = account.journal_id.currency_id or account.company_id.currency_id
    amount, count = ignored_total(account, currency)
    check = check_balance(
        aggregator_balance=bank_balance,
        journal_balance=journal_balance(account.env, account.journal_id),
        account_type=account.account_type or "checking",
        pending_total=amount,
        digits=currency.decimal_places,
    )
    return check, amount, count


def check_balances(connection, runs, client, reread, commit=None):
    """Read the connection's balances once and compare each synced journal with its bank.

    ``reread(account, run)`` reads the recent weeks of ``account`` again into ``run`` and
    returns how many lines that changed (``OpeningBalance.reread_recent``).
    """
    env = connection.env
    try:
        remote = {a.remote_id: a for a in client.list_accounts(connection.remote_id)}
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
            found = reread(account, run)
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
                "balance_checked_bank": float(bank.balance),
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


def recheck_after_change(accounts):
    """The journals of ``accounts`` changed outside a synchronisation (operations deleted,
    ignored, typed or corrected by hand): compare them again with the bank's balance of the
    last check, without asking the aggregator, so that a repaired difference clears itself,
    with its alert, and a new one shows at once. A new difference alerts nobody yet: the next
    synchronisation reads the bank again before that.

    Only when the last synchronisation ended ``done``: it read the bank's balance after its
    last operation. A run still going, or one that ended ``partial`` or ``failed``, imported
    operations the bank's last balance may not count yet; the next run checks again. The date
    of the check stays that of the bank's balance."""
    for account in accounts.sudo():
        if not account.journal_id or not account.balance_check_date or account.sync_needs_opening:
            continue
        last = account.run_ids.filtered(lambda run: run.state != "skipped")[:1]
        if last.state != "done":
            continue
        currency = account.journal_id.currency_id or account.company_id.currency_id
        check, _amount, _count = compare_with_bank(
            account, Decimal(str(round(account.balance_checked_bank, currency.decimal_places)))
        )
        account.write({"balance_difference": float(check.difference)})
        if check.ok:
            _balance_alert(account, check, currency, None)


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

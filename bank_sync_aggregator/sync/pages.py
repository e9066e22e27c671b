"""The page application: one page of the aggregator's operations against the journal.

:class:`PageApplier` diffs a page against the lines already in the journal (one query for the
keys that exist, one for what the accountant did on them) and applies the result with batched
ORM calls: lines created (partners found, statements made, twins typed by hand adopted),
updated, deleted or flagged for a person to review. The decisions themselves (keys, diff,
twins, statement periods) are the pure functions of :mod:`bank_sync_bridge.sync`.
"""

import json
import logging
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import psycopg2

from odoo.exceptions import UserError, ValidationError
from odoo.tools.misc import format_date, formatLang

from bank_sync_bridge.matching import counterparty_key
from bank_sync_bridge.sync import (
    DEFAULT_TWIN_WINDOW_DAYS,
    LineSnapshot,
    TwinCandidate,
    diff_page,
    match_twins,
    snapshot_from_baseline,
    statement_period,
    transaction_keys,
)
from bank_sync_bridge.sync import (
    baseline as operation_baseline,
)

from ..const import LINE_CONTEXT
from .balance import give_up_to_earlier_lines
from .reconcile import match_lines

_logger = logging.getLogger(__name__)

#: With a time budget, new operations are created by batches of this size and the budget is
#: checked between them: a bank page (up to hundreds of operations) takes seconds to create.
BUDGET_BATCH = 20

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


class PageApplier:
    """Applies one page of operations to the journal: the part of
    :class:`~odoo.addons.bank_sync_aggregator.sync.run.AccountSynchroniser` that writes lines.

    It works on the run's state, which the synchroniser holds: ``account``, ``journal``,
    ``company``, ``currency``, ``kind`` (the aggregator's), ``counts`` (the run's counters),
    ``ignored_keys``, ``time_budget``, ``late_reread``; and it asks :meth:`_budget_spent`
    between batches of creations.
    """

    def _apply_page(self, page, window):
        transactions = [
            self._normalise(tx)
            for tx in page.transactions
            if tx.account_id == self.account.remote_id
        ]
        self.counts["pages"] += 1
        keys = transaction_keys(self.kind, transactions)
        existing = self._existing(keys)
        diff = diff_page(transactions, keys, existing, self.ignored_keys)
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
            self._delete_lines([line_id for _key, line_id in diff.delete])
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

    def _delete_lines(self, line_ids):
        """Remove the lines whose operation the bank deleted (none carries the accountant's
        work). One Odoo refuses to delete (its period is locked) is flagged instead, once:
        otherwise the page, and every operation after it, could never be imported."""
        StLine = self.env["account.bank.statement.line"].with_context(**LINE_CONTEXT)
        try:
            with self.cr.savepoint():
                StLine.browse(line_ids).unlink()
            self.counts["deleted_count"] += len(line_ids)
            return
        except (UserError, ValidationError) as error:
            _logger.info(
                "Deleting %s lines at once was refused (%s): one at a time", len(line_ids), error
            )
        for line_id in line_ids:
            try:
                with self.cr.savepoint():
                    StLine.browse(line_id).unlink()
                self.counts["deleted_count"] += 1
            except (UserError, ValidationError) as error:
                self._flag(
                    line_id,
                    self.env._(
                        "The bank deleted this operation, but the line could not be deleted: "
                        "%(error)s Check it, and delete it yourself once its period is open.",
                        error=str(error.args[0] if error.args else error),
                    ),
                    status="deleted",
                )

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
                existing[key] = snapshot_from_baseline(
                    line_id, baseline, protected=protected, deleted_flag=deleted
                )
                continue
            # A line synced before baselines were kept: its own fields stand for the bank's.
            label, booking, amount, value_date, foreign, currency, name, number, ref, kind = values
            existing[key] = LineSnapshot(
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
        window = timedelta(days=DEFAULT_TWIN_WINDOW_DAYS)
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
            TwinCandidate(
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
        twins = match_twins(operations, self._twin_candidates(operations))
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
                    "bank_sync_baseline": operation_baseline(tx),
                    "transaction_details": json_safe(tx.raw),
                }
            )
        self.counts["adopted_count"] += len(twins.adopt)
        new = [(key, tx) for key, tx in operations if key not in twins.adopt]
        by_iban, by_name, by_key = StLine._bank_sync_partner_index(
            self.company,
            {sanitize_account_number(tx.counterparty_account) for _k, tx in new} - {""},
            {tx.counterparty_name for _k, tx in new if tx.counterparty_name},
            {counterparty_key(tx.counterparty_name, tx.label) for _k, tx in new},
        )
        statements = self._statements({tx.booking_date for _k, tx in new})
        vals_list = []
        for key, tx in new:
            vals = self._line_values(key, tx)
            # The surest first: the bank account paid from or to, then the exact name, then
            # what earlier reconciliations taught, then a partner named like the merchant.
            iban = by_iban.get(sanitize_account_number(tx.counterparty_account))
            named = by_name.get(tx.counterparty_name)
            keyed, keyed_origin = by_key.get(vals["bank_sync_counterparty_key"], (None, None))
            for partner_id, origin in ((iban, "iban"), (named, "name"), (keyed, keyed_origin)):
                if partner_id:
                    vals.update(partner_id=partner_id, bank_sync_partner_origin=origin)
                    break
            statement = statements.get(
                statement_period(tx.booking_date, self.account.statement_grouping)
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
        created = StLine.create(vals_list)
        # In the page's transaction: the opening line never counts them twice.
        give_up_to_earlier_lines(self.account, created)
        self.counts["created_count"] += len(vals_list)
        self.counts["review_count"] += len(twins.ambiguous)
        if self.company.bank_sync_auto_reconcile:
            # With the page: a line and its reconciliation become durable together. Matching
            # that fails for any other reason than the database's (a lock: the page is tried
            # again) leaves the page imported and its lines for a person.
            try:
                with self.cr.savepoint():
                    result = match_lines(created, fresh=True)
            except psycopg2.OperationalError:
                raise
            except Exception:
                _logger.exception("Matching failed for account %s: lines left", self.account.id)
            else:
                self.counts["reconciled_count"] += result.reconciled
                self.counts["suggested_count"] += result.suggested

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
            "bank_sync_baseline": operation_baseline(tx),
            "bank_sync_remittance": tx.remittance or False,
            "bank_sync_counterparty_key": counterparty_key(tx.counterparty_name, tx.label) or False,
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
        period = statement_period(day, self.account.statement_grouping)
        return self._statements({day}).get(period) if period else None

    def _statements(self, dates):
        """Statement id per period of the page (created when missing), for the grouping."""
        grouping = self.account.statement_grouping
        periods = {statement_period(day, grouping) for day in dates} - {None}
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
                        for name in (
                            "payment_ref",
                            "ref",
                            "partner_name",
                            "account_number",
                            "bank_sync_to_review",
                            "bank_sync_review_note",
                        )
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
            vals["bank_sync_baseline"] = operation_baseline(baseline)
        line.write(vals)
        self.counts["review_count"] += 1

"""Imported lines against the books' open items: sure matches reconciled, the rest suggested.

:func:`bank_sync_bridge.matching.match_operations` decides; this module reads what it needs in
two queries (the company's open items, the lines' own texts) and applies its decisions with
Odoo's own accounting:

- :func:`open_items`: customer invoices, vendor bills, credit notes and payments waiting on an
  outstanding account, with their residual and their references;
- :func:`match_lines`: decide for lines, reconcile the sure matches, say what happened;
- :func:`reconcile_with`: what a sure match, or a person choosing a suggestion, does to a line:
  its suspense item gives way to counterparts on the items' own accounts, reconciled with them,
  so that the invoice shows paid and Odoo's "Revert reconciliation" puts everything back.

Matching never crosses companies. An item settles a line of its own currency only, for sure
or suggested; an item in another currency (an invoice issued in dollars, paid in euros) is
only suggested, when the line quotes it, and a person settling it accepts the exchange
difference. A line the bank converted from another currency is left to a person.
"""

import logging
from collections import namedtuple
from decimal import Decimal

import psycopg2

from odoo import Command
from odoo.exceptions import UserError, ValidationError

from bank_sync_bridge.matching import BankOperation, OpenItem, match_operations, reference_forms

_logger = logging.getLogger(__name__)

#: What matching did to a set of lines: reconciled automatically, left with suggestions.
MatchResult = namedtuple("MatchResult", "reconciled suggested")

# Open journal items a bank operation may settle: invoices', bills' and credit notes'
# receivable or payable items, and payments' items waiting on an outstanding account.
# Statement lines' own items are left out (the suspense account of a French chart is
# reconcilable: every other bank line waiting for its counterpart would look like one).
OPEN_ITEMS_SQL = """
    SELECT aml.id, COALESCE(p.commercial_partner_id, aml.partner_id),
           aml.amount_residual_currency, cur.name, cur.decimal_places,
           m.name, m.payment_reference, m.ref, m.move_type, aml.date,
           m.origin_payment_id IS NOT NULL, aml.amount_residual
      FROM account_move_line aml
      JOIN account_move m ON m.id = aml.move_id
      JOIN account_account a ON a.id = aml.account_id
      JOIN res_currency cur ON cur.id = aml.currency_id
 LEFT JOIN res_partner p ON p.id = aml.partner_id
     WHERE aml.company_id = %(company)s
       AND aml.parent_state = 'posted'
       AND NOT aml.reconciled
       AND aml.amount_residual_currency != 0
       AND aml.statement_line_id IS NULL
       AND a.reconcile
       AND CASE
           -- A payment waits on its outstanding account; its receivable or payable side is
           -- for the invoices it pays, not for the bank.
           WHEN m.origin_payment_id IS NOT NULL
               THEN a.account_type NOT IN ('asset_receivable', 'liability_payable')
           ELSE a.account_type IN ('asset_receivable', 'liability_payable')
       END
"""

KINDS = {
    "out_invoice": "invoice",
    "out_receipt": "invoice",
    "out_refund": "credit_note",
    "in_invoice": "bill",
    "in_receipt": "bill",
    "in_refund": "refund",
}


def amount_of(value, digits):
    """A stored amount (a float) as the exact decimal it stands for."""
    return Decimal(str(round(value or 0.0, digits))).quantize(Decimal(1).scaleb(-digits))


def open_items(company, exclude=()):
    """The open items of ``company``, in every currency, for the matcher (one query)."""
    env = company.env
    for model in ("account.move.line", "account.move", "account.partial.reconcile"):
        env[model].flush_model()
    env.cr.execute(OPEN_ITEMS_SQL, {"company": company.id})
    company_digits = company.currency_id.decimal_places
    items = []
    for row in env.cr.fetchall():
        item_id, partner, residual, currency, digits, name, payment_ref, ref, move_type, day = row[
            :10
        ]
        if item_id in exclude:
            continue
        items.append(
            OpenItem(
                item_id=item_id,
                partner_id=partner,
                amount=amount_of(residual, digits),
                currency=currency,
                references=tuple(dict.fromkeys(r for r in (name, payment_ref, ref) if r)),
                kind="payment" if row[10] else KINDS.get(move_type, "entry"),
                document=name or "",
                date=day,
                amount_company=amount_of(row[11], company_digits),
            )
        )
    return items


def operations_of(lines):
    """The matcher's view of statement lines: amount in the journal's currency, texts, and
    the partner, sure unless it was only guessed from a merchant's name in the label."""
    return [
        BankOperation(
            line_id=line.id,
            amount=amount_of(line.amount, line.currency_id.decimal_places),
            currency=line.currency_id.name,
            texts=tuple(t for t in (line.payment_ref, line.ref, line.bank_sync_remittance) if t),
            partner_id=line.partner_id.commercial_partner_id.id or None,
            date=line.date,
            partner_sure=line.bank_sync_partner_origin != "merchant",
        )
        for line in lines
    ]


def matchable(lines):
    """The lines matching considers at all: posted, unreconciled, and paid in the journal's
    currency. A line the bank converted from another currency (``foreign_currency_id``) settles
    an amount in that currency the books may count otherwise: always left to a person."""
    return lines.filtered(
        lambda line: (
            not line.is_reconciled
            and line.move_id.state == "posted"
            and not line.foreign_currency_id
        )
    )


def lines_to_match(lines):
    """The lines matching may touch: :func:`matchable`, still on their suspense account only
    (no counterpart chosen by hand, nothing reconciled in part)."""
    lines = matchable(lines)
    worked = lines._bank_sync_user_work(lines.ids)
    return lines.filtered(lambda line: line.id not in worked)


def decide(lines, fresh=False):
    """The matcher's decisions for ``lines`` of one company: ``{line id: Decision}``;
    ``fresh`` lines were just created (nobody worked on them yet).

    The company's other lines waiting for a counterpart claim items too: an item that one of
    them could settle as surely is no sure match for ``lines`` either, so that what is
    reconciled does not depend on how the lines were grouped (a page of the daily import, the
    first lines of a Sync now, a selection).
    """
    # (Fresh lines: OCA's widget, when installed, may have reconciled some as they were made.)
    lines = matchable(lines) if fresh else lines_to_match(lines)
    if not lines:
        return {}
    company_currency = lines.company_id.currency_id.name
    items = open_items(lines.company_id)
    operations = operations_of(lines)
    decisions = match_operations(operations, items, company_currency)
    sure = [decision.apply for decision in decisions if decision.apply]
    if sure:
        rivals = _rivals(lines, items, sure)
        if rivals:
            decisions = match_operations(
                operations + operations_of(rivals), items, company_currency
            )
    return {decision.line_id: decision for decision in decisions if decision.line_id in lines.ids}


#: The most other waiting lines read as rivals for one batch (the most recent first): a guard
#: for companies with thousands of lines never reconciled.
MAX_RIVALS = 500


def _rivals(lines, items, sure):
    """Other lines of the company, waiting for a counterpart, that could claim the items of
    the ``sure`` candidates as surely: those of an exact amount such a claim needs (an item's
    residual, or a sure candidate's total), and those whose wording carries the number of one
    of the items (a line quoting it with other documents, for another total)."""
    by_id = {item.item_id: item for item in items}
    sure_items = [by_id[item_id] for candidate in sure for item_id in candidate.item_ids]
    amounts = {item.amount for item in sure_items}
    amounts |= {sum((by_id[i].amount for i in c.item_ids), Decimal(0)) for c in sure}
    numbers = {
        forms.tokens[-1]
        for item in sure_items
        for reference in item.references
        if (forms := reference_forms(reference)) and forms.tokens[-1].isdigit()
    }
    # A number, whatever zeros pad it, between two non-digits: a rough filter, the matcher
    # then says which lines really quote an item.
    pattern = f"(^|[^0-9])0*({'|'.join(sorted(numbers))})([^0-9]|$)" if numbers else None
    StLine = lines.env["account.bank.statement.line"]
    StLine.flush_model(
        ["amount", "is_reconciled", "company_id", "foreign_currency_id", "payment_ref"]
    )
    lines.env.cr.execute(
        """
        SELECT l.id
          FROM account_bank_statement_line l
          JOIN account_move m ON m.id = l.move_id
         WHERE l.company_id = %(company)s
           AND NOT l.is_reconciled
           AND m.state = 'posted'
           AND l.foreign_currency_id IS NULL
           AND l.id != ALL(%(batch)s)
           AND (
               l.amount = ANY(%(amounts)s::numeric[])
               OR (%(pattern)s IS NOT NULL AND concat_ws(' ', l.payment_ref, m.ref,
                                                          l.bank_sync_remittance) ~ %(pattern)s)
           )
         ORDER BY m.date DESC, l.id DESC
         LIMIT %(limit)s
        """,
        {
            "company": lines.company_id.id,
            "batch": lines.ids,
            "amounts": [str(amount) for amount in amounts],
            "pattern": pattern,
            "limit": MAX_RIVALS,
        },
    )
    rivals = StLine.browse([row[0] for row in lines.env.cr.fetchall()])
    return lines_to_match(rivals.with_env(lines.env))


def match_lines(lines, apply=True, fresh=False):
    """Decide for ``lines`` (of one company) and, with ``apply``, reconcile the sure matches.
    Returns a :class:`MatchResult`.

    The sure matches are reconciled together (one rewrite of their entries, one
    reconciliation plan): Odoo's reconciliation costs several times the creation of a line,
    one at a time. Should Odoo refuse any of them (a lock date, an item reconciled meanwhile),
    they are reconciled one at a time instead, each in a savepoint: the refused one stays for a
    person and leaves the others done.
    """
    decisions = decide(lines, fresh=fresh)
    sure = {line_id: d.apply for line_id, d in decisions.items() if apply and d.apply}
    StLine = lines.env["account.bank.statement.line"]
    reconciled = 0
    if sure:
        try:
            with lines.env.cr.savepoint():
                _reconcile_sure(StLine, sure)
            reconciled = len(sure)
        except psycopg2.OperationalError:
            raise  # a lock or a serialization failure: the whole page is tried again
        except Exception:  # each one again, alone: the log says which
            reconciled = sum(
                _reconcile_one(StLine, line_id, candidate) for line_id, candidate in sure.items()
            )
    suggested = sum(1 for d in decisions.values() if not d.apply and d.suggestions)
    return MatchResult(reconciled, suggested)


def _reconcile_sure(StLine, sure):
    """Reconcile each line of ``sure`` (``{line id: Candidate}``) with its candidate's items,
    all together, and say on each line why."""
    pairs = [(StLine.browse(line_id), c.item_ids) for line_id, c in sure.items()]
    for (line, _ids), items in zip(pairs, reconcile_many(pairs, exact_only=True), strict=True):
        line.write(
            {
                "bank_sync_match_rule": sure[line.id].rule,
                "bank_sync_match_documents": ", ".join(items.move_id.mapped("name")),
            }
        )


def _reconcile_one(StLine, line_id, candidate):
    """:func:`_reconcile_sure` for one line, in its own savepoint: 1 if reconciled, else 0."""
    try:
        with StLine.env.cr.savepoint():
            _reconcile_sure(StLine, {line_id: candidate})
    except (UserError, ValidationError):
        return 0
    except psycopg2.OperationalError:
        raise
    except Exception:
        # Whatever else goes wrong in one reconciliation (another module's override...)
        # leaves that line for a person and the import goes on: the line is imported, its
        # match is not.
        _logger.exception("Bank line %s could not be reconciled automatically", line_id)
        return 0
    return 1


def reconcile_with(line, item_ids):
    """Reconcile ``line`` with the open items ``item_ids`` through its suspense item, as the
    reconciliation widgets do: the suspense item gives way to one counterpart per item, on the
    item's own account (receivable, payable, outstanding), for what the line pays of it, and
    each counterpart is reconciled with its item. Returns the items.

    When the items' residuals add up to the line, each is paid in full. Otherwise (a person
    chose it) the items are paid in turn: when the line pays less, the last one it reaches is
    paid in part; when it pays more, what is left stays on the suspense account. The line's
    partner becomes the items' partner. Odoo's "Revert reconciliation" puts the line back.
    """
    return reconcile_many([(line, item_ids)])[0]


def reconcile_many(pairs, exact_only=False):
    """:func:`reconcile_with` for many ``(line, item ids)`` pairs at once: their suspense
    items rewritten in a few writes, and one reconciliation plan for all. Returns the items
    each line settles, in the order of ``pairs``. With ``exact_only`` (a match made without a
    person), a line whose items no longer add up to exactly what it settles is refused
    (:class:`UserError`) rather than paid in part.

    A line settling exactly items of one account, partner and currency (nearly every sure
    match) keeps its suspense item, moved to that account and partner (one write per account
    and partner for all such lines) and reconciled with all its items; the others get one
    counterpart per item, in place of their suspense item."""
    plans = [
        _counterparts(line, line.env["account.move.line"].browse(ids), exact_only)
        for line, ids in pairs
    ]
    if not plans:
        return []
    env = pairs[0][0].env
    moves = env["account.move"].browse([line.move_id.id for line, _ids in pairs])
    Item = env["account.move.line"].with_context(
        skip_account_move_synchronization=True,
        skip_invoice_sync=True,
        skip_readonly_check=True,
        check_move_validity=False,
    )
    moved = [plan for plan in plans if plan.values is None]
    split = [plan for plan in plans if plan.values is not None]
    reconciliation = []
    with moves._check_balanced({"records": moves, "self": moves}):
        targets = {}
        for plan in moved:
            # The items' partner, as their counterparts would have (the line's may be a
            # contact of it, or another partner a person chose).
            partner = plan.items.partner_id
            targets.setdefault((plan.items.account_id, partner), []).append(plan.suspense.id)
        for (account, partner), suspense_ids in targets.items():
            Item.browse(suspense_ids).write({"account_id": account.id, "partner_id": partner.id})
        reconciliation += [plan.suspense + plan.items for plan in moved]
        if split:
            moves.with_context(force_delete=True, **Item.env.context).write(
                {"line_ids": [Command.delete(plan.suspense.id) for plan in split]}
            )
            created = Item.create([vals for plan in split for vals in plan.values])
            start = 0
            for plan in split:
                counterparts = created[start : start + len(plan.values)]
                start += len(plan.values)
                reconciliation += [
                    counterpart + item
                    for counterpart, item in zip(counterparts, plan.items, strict=False)
                ]
    # Items all in the company's currency have no exchange difference to compute: Odoo is
    # told so (its preparation is about a seventh of a reconciliation's time). Not for
    # documents with taxes due on payment: the same step books their cash-basis rounding.
    cash_basis = _cash_basis_moves(
        env, {move.id for items in reconciliation for move in items.move_id}
    )
    company_only, others = [], []
    for items in reconciliation:
        without = _without_exchange_difference(items, cash_basis)
        (company_only if without else others).append(items)
    AccountMoveLine = env["account.move.line"]
    if company_only:
        AccountMoveLine.with_context(no_exchange_difference=True)._reconcile_plan(company_only)
    if others:
        AccountMoveLine._reconcile_plan(others)
    return [plan.items for plan in plans]


def _without_exchange_difference(items, cash_basis):
    """Whether reconciling ``items`` together can book no exchange difference, nor any
    cash-basis rounding: all in the company's currency, none of the ``cash_basis`` moves."""
    company = items.company_id
    return items.currency_id == company.currency_id and not (set(items.move_id.ids) & cash_basis)


#: Moves with a tax due on payment: its own tax line, or a base line taxed by it (alone or
#: in a group).
CASH_BASIS_MOVES_SQL = """
    SELECT aml.move_id
      FROM account_move_line aml
      JOIN account_tax t ON t.id = aml.tax_line_id
     WHERE aml.move_id = ANY(%(moves)s) AND t.tax_exigibility = 'on_payment'
    UNION
    SELECT aml.move_id
      FROM account_move_line aml
      JOIN account_move_line_account_tax_rel rel ON rel.account_move_line_id = aml.id
      JOIN account_tax t ON t.id = rel.account_tax_id
 LEFT JOIN account_tax_filiation_rel f ON f.parent_tax = t.id
 LEFT JOIN account_tax child ON child.id = f.child_tax
     WHERE aml.move_id = ANY(%(moves)s)
       AND 'on_payment' IN (t.tax_exigibility, child.tax_exigibility)
"""


def _cash_basis_moves(env, move_ids):
    """The moves among ``move_ids`` whose reconciliation books cash-basis entries (one
    query; none when no company of theirs uses cash basis)."""
    moves = env["account.move"].browse(move_ids)
    if not move_ids or not any(moves.company_id.mapped("tax_exigibility")):
        return set()
    env["account.move.line"].flush_model(["tax_line_id", "tax_ids", "move_id"])
    env.cr.execute(CASH_BASIS_MOVES_SQL, {"moves": list(move_ids)})
    return {row[0] for row in env.cr.fetchall()}


#: What settling a line takes: its suspense item, the counterparts that replace it (None when
#: the suspense item itself moves to the items' one account), and the items they are
#: reconciled with (in the counterparts' order).
_Plan = namedtuple("_Plan", "suspense values items")


#: A person settling items in another currency than the bank line's settles them in full when
#: the line, converted at its date's rate, pays them to within this share (the bank's rate and
#: the days between the two rates): the rest is the exchange difference Odoo books. Further
#: off, the line pays them in part (or in full, what is left staying on the suspense account).
CURRENCY_SETTLE_TOLERANCE = Decimal("0.03")


#: How a line settles its items: the items' currency, what the line pays in it, what they
#: ask in it, and whether the line settles them exactly (in full).
_Settlement = namedtuple("_Settlement", "currency paid residual exact")


def _settlement(line, suspense, items, exact_only):
    """The :class:`_Settlement` of ``line`` (through its ``suspense`` item) with ``items``,
    or a :class:`UserError` saying why it cannot settle them."""
    env = line.env
    if line.foreign_currency_id:
        raise UserError(
            env._(
                "This bank line was converted from another currency: reconcile it by hand, "
                "choosing the exchange difference yourself."
            )
        )
    currency = suspense.currency_id
    total = -suspense.amount_currency  # what the line settles, with the bank's sign
    item_currency = items.currency_id
    if len(item_currency) > 1:
        raise UserError(
            env._(
                "%(documents)s are in several currencies: reconcile them one currency at a time.",
                documents=", ".join(items.move_id.mapped("name")),
            )
        )
    residual = sum(items.mapped("amount_residual_currency"))
    if item_currency and item_currency != currency:
        if currency != line.company_id.currency_id:
            # What a foreign-currency account's line is worth in the company's currency is
            # the bank's conversion, not a rate of the books.
            raise UserError(
                env._(
                    "This bank account is in %(currency)s: it settles documents in "
                    "%(currency)s only; reconcile %(documents)s by hand.",
                    currency=currency.name,
                    documents=", ".join(items.move_id.mapped("name")),
                )
            )
        if exact_only:
            raise UserError(
                env._(
                    "%(documents)s are in another currency than this bank line: a person "
                    "settles them, accepting the exchange difference.",
                    documents=", ".join(items.move_id.mapped("name")),
                )
            )
        # What the line pays, in the items' currency, at its date's rate.
        paid = currency._convert(total, item_currency, line.company_id, line.date)
        exact = paid * residual > 0 and abs(paid - residual) <= abs(residual) * float(
            CURRENCY_SETTLE_TOLERANCE
        )
    else:
        item_currency, paid = currency, total
        exact = currency.compare_amounts(residual, total) == 0
    if exact_only and not exact:
        raise UserError(
            env._(
                "%(documents)s no longer add up to this bank line: it is left for a person.",
                documents=", ".join(items.move_id.mapped("name")),
            )
        )
    if not exact and any(
        item_currency.compare_amounts(item.amount_residual_currency, 0)
        * currency.compare_amounts(total, 0)
        <= 0
        for item in items
    ):
        # Paid in part, items are paid in turn: an item going the other way (a credit note
        # for a payment) would get a counterpart of the wrong sign.
        raise UserError(
            env._(
                "This bank line goes the other way from %(documents)s: it can only settle them "
                "together with other items when the amounts agree exactly.",
                documents=", ".join(items.move_id.mapped("name")),
            )
        )
    return _Settlement(item_currency, paid, residual, exact)


def settlement_of(line, items):
    """How a person's *Reconcile* would settle ``items`` with ``line``: the items' currency,
    what the line pays in it, what they ask in it, and whether they are settled in full; a
    :class:`UserError` says why it would be refused (None when the line has nothing left
    to settle)."""
    _liquidity, suspense, _other = line._seek_for_lines()
    if not suspense:
        return None
    return _settlement(line, suspense, items, exact_only=False)


def _counterparts(line, items, exact_only=False):
    """The :class:`_Plan` of :func:`reconcile_with` for one line, checked first."""
    _liquidity, suspense, _other = line._seek_for_lines()
    currency = suspense.currency_id
    item_currency, paid, residual, exact = _settlement(line, suspense, items, exact_only)
    partners = items.partner_id.commercial_partner_id
    if len(partners) == 1 and line.partner_id.commercial_partner_id != partners:
        line.partner_id = partners
        _liquidity, suspense, _other = line._seek_for_lines()
    if (
        exact
        and item_currency == currency
        and len(items.account_id) == 1
        and len(items.partner_id) <= 1
    ):
        return _Plan(suspense, None, items)
    # What each item gets, in its own currency: all of its residual when the line settles
    # them exactly; otherwise in turn, the last one it reaches in part.
    shares, left = [], residual if exact else paid
    for item in items:
        share = item.amount_residual_currency
        if not exact and item_currency.compare_amounts(abs(share), abs(left)) > 0:
            share = left
        if item_currency.is_zero(share):
            break
        shares.append((item, share))
        left -= share
    # What the line pays more than its items stays on the suspense account, in the line's
    # currency. The company-currency side is shared in proportion (in the items' currency);
    # the last line written takes the remainder, so that the entry stays balanced to the cent.
    weights = [share for _item, share in shares]
    if not item_currency.is_zero(left):
        weights.append(left)
    balances = _split(-suspense.balance, sum(weights), weights, line.company_id.currency_id)
    extra = []
    if not item_currency.is_zero(left):
        # (Settling another currency, the line is in the company's: its rest is its balance.)
        extra = [left if item_currency == currency else balances[-1]]
    values = [
        {
            "move_id": line.move_id.id,
            "account_id": item.account_id.id,
            "partner_id": item.partner_id.id,
            "name": line.payment_ref,
            "currency_id": item_currency.id,
            "amount_currency": -share,
            "balance": -balance,
        }
        for (item, share), balance in zip(shares, balances, strict=False)
    ]
    values += [
        {
            "move_id": line.move_id.id,
            "account_id": suspense.account_id.id,
            "partner_id": line.partner_id.id,
            "name": line.payment_ref,
            "currency_id": currency.id,
            "amount_currency": -amount,
            "balance": -balances[-1],
        }
        for amount in extra
    ]
    settled = line.env["account.move.line"].concat(*(item for item, _share in shares))
    return _Plan(suspense, values, settled)


def _split(balance, total, amounts, currency):
    """``balance`` shared like ``amounts`` share ``total``; the last part takes the rest."""
    parts, left = [], balance
    for amount in amounts[:-1]:
        part = currency.round(balance * amount / total) if total else 0.0
        parts.append(part)
        left -= part
    return [*parts, currency.round(left)]

"""Books that the sandbox's operations close, and matching judged against them.

The sandbox's customer transfers and supplier payments say in their ``raw["pays"]`` what they
really pay (the invoices' numbers, dates and amounts; the supplier's invoice number and
amount). From a list of such operations:

- :func:`plan_books` says which documents a company's books hold for them (customer invoices
  named as the customer knows them, vendor bills carrying the supplier's number), with the
  usual traps added on the books' side (a partial payment, an amount that two open invoices of
  the same customer share, an invoice issued in another currency), and the truth: which
  documents each operation pays and whether that counterpart is exact and unique;
- :func:`book` creates those documents in a company (partners found by name, or created with
  the IBAN the bank shows for them), posted;
- :func:`judge` compares, after a synchronisation, what matching did with that truth: the
  lines reconciled automatically (and with what), the first suggestion of the match window for
  the others.

Used by ``tools/demo.py`` (``make demo``) and ``bench/bench_reconcile.py``. Pure Python down to
:func:`book`, which needs an Odoo environment.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal

CENT = Decimal("0.01")
#: The dollar's rate of the books (:func:`book` records it in the company's rates when it has
#: none): 1 EUR = 1.08 USD, so that each invoice in dollars asks, in euros, what the transfer
#: paying it brings.
USD_PER_EUR = Decimal("1.08")

#: The cases an operation paying documents falls in; the ``exact`` ones have an exact and
#: unique counterpart in the books (matching should reconcile them by itself).
EXACT_CASES = ("reference", "grouped", "no_reference", "bill")
CASES = (
    *EXACT_CASES,
    "partial",
    "ambiguous",
    "typo",
    "no_reference_grouped",
    "foreign_currency",
    "shared_number",
)


@dataclass(frozen=True)
class Document:
    """One invoice or bill of the books."""

    key: str
    #: ``out_invoice`` or ``in_invoice``.
    move_type: str
    partner: str
    #: The invoice's number (customers), the supplier's invoice number (bills).
    number: str
    date: date
    #: Total to pay, positive, in ``currency``.
    amount: Decimal
    currency: str = "EUR"
    #: The IBAN the bank shows for the partner (None when it shows none).
    iban: str | None = None


@dataclass(frozen=True)
class Truth:
    """What one bank operation really pays."""

    remote_id: str
    amount: Decimal
    label: str
    case: str
    documents: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return self.case in EXACT_CASES


@dataclass(frozen=True)
class Traps:
    """How often the books' side sets a trap, out of 100 eligible operations: ``partial`` and
    ``foreign_currency`` among customer transfers that quote one invoice right,
    ``ambiguous`` among those that quote nothing."""

    partial: int = 3
    ambiguous: int = 40
    foreign_currency: int = 0


def _pick(remote_id: str, salt: str) -> int:
    """A number in 0..99 that depends only on the operation (stable across runs)."""
    return int(hashlib.sha256(f"{salt}|{remote_id}".encode()).hexdigest(), 16) % 100


def plan_books(transactions, traps: Traps = Traps()) -> tuple[list[Document], list[Truth]]:
    """The documents the books hold for ``transactions`` (the sandbox's, booked), and the truth
    for each operation that pays some (see the module's docstring)."""
    documents: list[Document] = []
    truths: list[Truth] = []
    transactions = [
        tx
        for tx in transactions
        if (tx.raw or {}).get("pays") and not (tx.deleted or tx.is_pending)
    ]
    # A supplier number two payments quote (the Sandbox draws them at random): which bill
    # each pays is no truth anyone could know; both are left out.
    bill_numbers = Counter(
        (tx.counterparty_name, tx.raw["pays"][0]["number"]) for tx in transactions if tx.amount < 0
    )
    # The same number on two suppliers' bills: the operation's partner tells them apart, its
    # wording does not (the matcher suggests, a person decides).
    shared = Counter(number for _supplier, number in bill_numbers)
    decoys = Counter()
    for tx in transactions:
        paid = tx.raw["pays"]
        amount = Decimal(str(tx.amount))
        if amount < 0:
            number = paid[0]["number"]
            if bill_numbers[(tx.counterparty_name, number)] > 1:
                continue
            document = Document(
                key=f"bill:{tx.remote_id}",
                move_type="in_invoice",
                partner=tx.counterparty_name,
                number=number,
                date=tx.booking_date - timedelta(days=20),
                amount=-amount,
                iban=tx.counterparty_account,
            )
            documents.append(document)
            case = "shared_number" if shared[number] > 1 else "bill"
            truths.append(Truth(tx.remote_id, amount, tx.label, case, (document.key,)))
            continue
        invoices = [
            Document(
                key=f"inv:{entry['number']}",
                move_type="out_invoice",
                partner=tx.counterparty_name,
                number=entry["number"],
                date=date.fromisoformat(entry["date"]),
                amount=Decimal(entry["amount"]),
                iban=tx.counterparty_account,
            )
            for entry in paid
        ]
        if "INV/" not in tx.label:
            case = "no_reference" if len(invoices) == 1 else "no_reference_grouped"
        elif any(doc.number not in tx.label for doc in invoices):
            case = "typo"
        else:
            case = "reference" if len(invoices) == 1 else "grouped"
        trap = _pick(tx.remote_id, "trap")
        if case == "reference" and trap < traps.partial:
            # The customer paid part of it: the invoice asks more than the transfer.
            case = "partial"
            extra = max((amount / 4).quantize(CENT), Decimal(10))
            invoices[0] = _replace(invoices[0], amount=amount + extra)
        elif case == "reference" and trap < traps.partial + traps.foreign_currency:
            # Invoiced in dollars, paid in euros.
            case = "foreign_currency"
            invoices[0] = _replace(
                invoices[0], currency="USD", amount=(amount * USD_PER_EUR).quantize(CENT)
            )
        elif case == "no_reference" and trap < traps.ambiguous:
            # Another open invoice of the same customer asks exactly the same amount.
            case = "ambiguous"
            first = invoices[0]
            # Issued just before or just after the true one: nothing tells them apart.
            issued = first.date + timedelta(days=3 if trap % 2 else -3)
            decoys[issued.year] += 1
            documents.append(
                _replace(
                    first,
                    key=f"decoy:{tx.remote_id}",
                    number=f"INV/{issued.year}/{90000 + decoys[issued.year]:05d}",
                    date=issued,
                )
            )
        documents += invoices
        truths.append(
            Truth(tx.remote_id, amount, tx.label, case, tuple(doc.key for doc in invoices))
        )
    return documents, truths


def _replace(document: Document, **changes) -> Document:
    return replace(document, **changes)


# ----------------------------------------------------------------------------- Odoo side


def book(env, company, documents: list[Document], batch: int = 200) -> dict[str, int]:
    """Create and post ``documents`` in ``company``; returns ``{document key: move id}``.
    Partners are found by name, or created (companies, with the IBAN the bank shows)."""
    from odoo import Command  # noqa: PLC0415

    Partner = env["res.partner"].with_company(company)
    names = sorted({doc.partner for doc in documents})
    found = {
        partner.name: partner
        for partner in Partner.search(
            [("name", "in", names), ("company_id", "in", [False, company.id])]
        )
    }
    ibans = {doc.partner: doc.iban for doc in documents if doc.iban}
    missing = [name for name in names if name not in found]
    for partner in Partner.create(
        [
            {
                "name": name,
                "is_company": True,
                "company_id": company.id,
                "bank_ids": [Command.create({"acc_number": ibans[name]})] if name in ibans else [],
            }
            for name in missing
        ]
    ):
        found[partner.name] = partner
    for name, iban in ibans.items():
        partner = found[name]
        if iban and not partner.bank_ids.filtered(
            lambda bank, i=iban: bank.sanitized_acc_number == i.replace(" ", "")
        ):
            partner.bank_ids = [Command.create({"acc_number": iban})]
    currencies = {
        code: env["res.currency"].with_context(active_test=False).search([("name", "=", code)])
        for code in {doc.currency for doc in documents}
    }
    for currency in currencies.values():
        currency.active = True
    usd = currencies.get("USD")
    if usd and not usd.with_company(company).rate_ids.filtered(
        lambda rate: rate.company_id == company
    ):
        first = min(doc.date for doc in documents if doc.currency == "USD")
        env["res.currency.rate"].create(
            {
                "name": first - timedelta(days=1),
                "rate": float(USD_PER_EUR),
                "currency_id": usd.id,
                "company_id": company.id,
            }
        )
    Move = env["account.move"].with_company(company).with_context(tracking_disable=True)
    moves: dict[str, int] = {}
    ordered = sorted(documents, key=lambda doc: (doc.date, doc.number))
    for start in range(0, len(ordered), batch):
        chunk = ordered[start : start + batch]
        created = Move.create(
            [
                {
                    "move_type": doc.move_type,
                    "partner_id": found[doc.partner].id,
                    "invoice_date": doc.date,
                    "date": doc.date,
                    "currency_id": currencies[doc.currency].id,
                    **(
                        {"name": doc.number}
                        if doc.move_type == "out_invoice"
                        else {"ref": doc.number}
                    ),
                    "invoice_line_ids": [
                        Command.create(
                            {
                                "name": doc.number,
                                "quantity": 1,
                                "price_unit": float(doc.amount),
                                "tax_ids": [Command.clear()],
                            }
                        )
                    ],
                }
                for doc in chunk
            ]
        )
        created.action_post()
        moves.update({doc.key: move.id for doc, move in zip(chunk, created, strict=True)})
    return moves


@dataclass
class Verdict:
    """What matching did, against the truth (see :func:`judge`)."""

    #: Operations paying documents; those with an exact unique counterpart.
    paying: int = 0
    exact: int = 0
    #: Reconciled automatically: all of them, those with an exact counterpart.
    auto: int = 0
    auto_exact: int = 0
    #: Automatic reconciliations with something else than the truth (any line).
    wrong: int = 0
    #: Paying operations not reconciled automatically: with a suggestion, with the true
    #: documents as first suggestion.
    others: int = 0
    suggested: int = 0
    top1: int = 0
    by_case: dict[str, Counter] = field(default_factory=dict)
    wrong_lines: list[str] = field(default_factory=list)
    #: The others whose first suggestion is not what they pay, and those with an exact
    #: counterpart not reconciled automatically: what they pay, what was suggested.
    misses: list[str] = field(default_factory=list)

    def pct(self, part: int, whole: int) -> float:
        return round(100.0 * part / whole, 1) if whole else 0.0


def judge(env, lines, truths: list[Truth], moves: dict[str, int], key_of) -> Verdict:
    """Compare what matching did on the statement ``lines`` with ``truths``.

    ``key_of(remote_id)`` gives the line's synchronisation key for an operation; ``moves``
    maps document keys to moves (:func:`book`). A line reconciled automatically is wrong when
    the documents it was reconciled with are not exactly the ones it pays (or it pays none).
    The first suggestion is the match window's (``bank.sync.match.wizard``) first candidate.
    """
    verdict = Verdict()
    by_key = {key_of(truth.remote_id): truth for truth in truths}
    for line in lines:
        truth = by_key.get(line.bank_sync_key)
        true_moves = {moves[doc] for doc in truth.documents} if truth else set()
        if truth:
            verdict.paying += 1
            verdict.exact += truth.exact
            counts = verdict.by_case.setdefault(truth.case, Counter())
            counts["operations"] += 1
        if line.bank_sync_match_rule:
            verdict.auto += 1
            reconciled = set(_reconciled_moves(line))
            if reconciled != true_moves:
                verdict.wrong += 1
                verdict.wrong_lines.append(f"{line.date} {line.payment_ref} {line.amount}")
            elif truth:
                counts["auto"] += 1
                verdict.auto_exact += truth.exact
            continue
        if not truth:
            continue
        verdict.others += 1
        wizard = env["bank.sync.match.wizard"].create({"line_id": line.id})
        first = wizard.candidate_ids[:1]
        if first:
            verdict.suggested += 1
            counts["suggested"] += 1
            if set(first.item_ids.move_id.ids) == true_moves:
                verdict.top1 += 1
                counts["top1"] += 1
        if not first or set(first.item_ids.move_id.ids) != true_moves or truth.exact:
            shown = "; ".join(f"{c.rule} {c.documents}" for c in wizard.candidate_ids[:3])
            pays = ", ".join(env["account.move"].browse(sorted(true_moves)).mapped("name"))
            verdict.misses.append(
                f"{truth.case}: {line.payment_ref} {line.amount} pays {pays}; "
                f"suggested: {shown or 'nothing'}"
            )
        wizard.unlink()
    return verdict


def _reconciled_moves(line):
    """The documents the line's journal entry was reconciled with."""
    items = line.move_id.line_ids
    partials = items.matched_debit_ids | items.matched_credit_ids
    counterparts = (partials.debit_move_id | partials.credit_move_id) - items
    return counterparts.move_id.ids

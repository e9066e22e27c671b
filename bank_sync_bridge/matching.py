"""Which open items of the books a bank operation settles: pure decisions, no database.

The addon gives the operations of a journal (amount, texts, identified partner) and the
company's open items in their currency (invoices, bills, credit notes, payments waiting on an
outstanding account, each with its residual and its references); :func:`match_operations`
says, for each operation, either which items it settles *for sure* (applied automatically),
or which candidates to suggest, best first, each with the reason it was chosen.

Money is never moved by a guess. An automatic match is exact and unique:

- ``reference``: the texts quote the references of open items of one partner (an invoice
  number, a payment reference, normalised: case, spaces, separators, leading zeros), no other
  operation of the batch quotes them, and the amount equals their residual, or the sum of the
  residuals of all the items quoted;
- ``partner_amount``: the partner is sure (counterparty IBAN, exact name, learned from a
  person's reconciliations, or chosen by a person; not a merchant's name guessed from the
  label), exactly one of its open items has exactly that residual, the texts quote no other
  reference of that partner, and no other operation of the batch claims that item.

Everything else (two candidates, an amount that differs, a partner or currency that does not
agree, a reference quoting an item that is not open) is only suggested; an item is never
suggested to be paid in part by an operation going the other way (a payment for a refund).
An item in another currency than the operation's (an invoice issued in dollars, paid in
euros) is suggested only when the texts of an operation in the company's currency quote it
(``reference_currency``): what it is worth in the operation's currency depends on a rate a
person accepts.

Amounts follow the bank's sign: an item's residual is what the bank operation must be to
settle it (a customer invoice of 120.00 is +120.00, a vendor bill of 80.00 is -80.00).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import NamedTuple

#: References shorter than this (letters and digits, leading zeros left out) or without a digit
#: identify nothing.
MIN_REFERENCE_LENGTH = 4
#: A reference made of digits only needs this many (leading zeros left out): fewer could be
#: any amount, count or year of a label.
MIN_NUMERIC_REFERENCE_LENGTH = 5
#: Tokens of a reference written with separators may be glued in a text ("INV 2026 42").
MAX_GLUED_TOKENS = 6
#: Suggestions kept per operation.
MAX_SUGGESTIONS = 5

_ALNUM_RUN = re.compile(r"[A-Z0-9]+")
_LETTERS_OR_DIGITS = re.compile(r"[A-Z]+|[0-9]+")
#: Dates as labels write them (15/01/2026, 2026-01-15, 15.01.26, 01/03, 12/2026): a reference
#: made of digits only is never found inside one.
_DATE_LIKE = re.compile(
    r"(?<![0-9])(?:[0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}"
    r"|[0-9]{1,2}[-/.][0-9]{1,2}(?:[-/.][0-9]{2,4})?"
    r"|[0-9]{1,2}[-/.][0-9]{4})(?![0-9])"
)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class OpenItem:
    """One open journal item of the books: what part of an invoice, a bill, a credit note or
    a payment is still to be settled."""

    item_id: int
    #: The commercial partner (None for an item without partner).
    partner_id: int | None
    #: Residual in the item's currency, with the sign of the bank operation that settles it.
    amount: Decimal
    currency: str
    #: The document's references a payer may quote: its number, its payment reference...
    references: tuple[str, ...] = ()
    #: ``invoice``, ``credit_note``, ``bill``, ``refund`` or ``payment``.
    kind: str = "invoice"
    #: Document name shown to people (the invoice number).
    document: str = ""
    date: date | None = None
    #: Residual in the company's currency (at the item's own rates), same sign as ``amount``;
    #: None when unknown. Only read for an item in another currency than the operation's.
    amount_company: Decimal | None = None


@dataclass(frozen=True)
class BankOperation:
    """One bank statement line waiting for its counterpart."""

    line_id: int
    amount: Decimal
    currency: str
    #: Label, bank reference, structured remittance: where a payer quotes references.
    texts: tuple[str, ...] = ()
    #: The partner identified for the operation (None when unknown).
    partner_id: int | None = None
    date: date | None = None
    #: Whether ``partner_id`` is sure enough to settle an item on the amount alone (its bank
    #: account, its exact name, a person's choice), or only a guess (a merchant's name read in
    #: the label) that may rank suggestions but never moves money.
    partner_sure: bool = True


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Candidate:
    """Items one operation may settle, and why they were picked."""

    item_ids: tuple[int, ...]
    #: ``reference``, ``references_sum``, ``partner_amount``, ``reference_completed``
    #: (references quoted, completed by another open item of the partner to the amount),
    #: ``reference_partial`` and ``references_sum_partial`` (references quoted but the amount
    #: differs), ``reference_currency`` (references of items in another currency quoted),
    #: ``partner_sum`` (two open items of the partner make the amount), ``amount`` (same
    #: amount, nothing else): see :data:`SCORES`.
    rule: str
    #: The references found in the operation's texts (for the reason shown to people).
    quoted: tuple[str, ...] = ()
    #: Residual of the items minus the operation's amount (0 for an exact amount); for items
    #: in another currency, their residual in the company's currency minus the operation's
    #: amount (0 when unknown).
    difference: Decimal = Decimal(0)
    score: int = 0


@dataclass(frozen=True)
class Decision:
    """What to do with one operation."""

    line_id: int
    #: The candidate to apply now; None when nothing is exact and unique.
    apply: Candidate | None = None
    #: Candidates to show a person, best first (the applied one is not repeated).
    suggestions: tuple[Candidate, ...] = field(default=())


# --------------------------------------------------------------------------- references


def _ascii_upper(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text or "")
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).upper()


class ReferenceForms(NamedTuple):
    """The forms under which a reference is looked for in texts (:func:`reference_forms`)."""

    #: Runs of letters or digits, digits without their leading zeros.
    tokens: tuple[str, ...]
    #: Letters and digits only, as written.
    compact: str
    #: Digits only: never looked for inside a date of the texts.
    numeric: bool


def reference_forms(reference: str) -> ReferenceForms | None:
    """The forms a reference is looked for in texts, or None when it is too weak to identify
    anything.

    - its tokens: runs of letters or digits, digits without their leading zeros
      (``INV/2026/00042`` -> ``("INV", "2026", "42")``), found again in a text whatever the
      separators and zeros there (``FACT INV-2026-042``);
    - its compact form: letters and digits only (``INV202600042``), found again in a text
      that glued the parts (``INV202600042`` or ``INV 2026 00042``).

    Too weak: fewer than :data:`MIN_REFERENCE_LENGTH` letters and digits once the leading
    zeros are left out (``INV-0001`` is ``INV1``, ``A-001`` is ``A1``), no digit at all, or
    digits only and fewer than :data:`MIN_NUMERIC_REFERENCE_LENGTH` of them (``00042`` would be
    found in ``PARKING 42``, ``2026`` in any date of that year).
    """
    upper = _ascii_upper(reference)
    compact = "".join(_ALNUM_RUN.findall(upper))
    tokens = tuple(_strip_zeros(token) for token in _LETTERS_OR_DIGITS.findall(upper))
    significant = "".join(part for part in tokens if part != "0")
    if len(significant) < MIN_REFERENCE_LENGTH or not any(ch.isdigit() for ch in significant):
        return None
    numeric = significant.isdigit()
    if numeric and len(significant) < MIN_NUMERIC_REFERENCE_LENGTH:
        return None
    return ReferenceForms(tokens, compact, numeric)


def _strip_zeros(token: str) -> str:
    return (token.lstrip("0") or "0") if token.isdigit() else token


@dataclass(frozen=True)
class TextIndex:
    """The forms under which references can be found in an operation's texts: all of them,
    and (``plain_*``) those outside the dates the texts carry, for references of digits only."""

    tokens: tuple[str, ...]
    glued: frozenset[str]
    plain_tokens: tuple[str, ...] = ()
    plain_glued: frozenset[str] = frozenset()

    @classmethod
    def of(cls, texts: Iterable[str]) -> TextIndex:
        uppers = [_ascii_upper(text or "") for text in texts]
        tokens, glued = cls._forms(uppers)
        plain_tokens, plain_glued = cls._forms(_DATE_LIKE.sub(" \x00 ", upper) for upper in uppers)
        return cls(tokens, glued, plain_tokens, plain_glued)

    @staticmethod
    def _forms(uppers: Iterable[str]) -> tuple[tuple[str, ...], frozenset[str]]:
        tokens: list[str] = []
        glued: set[str] = set()
        for upper in uppers:
            for part in upper.split("\x00"):  # nothing is glued across a date left out
                tokens += [_strip_zeros(t) for t in _LETTERS_OR_DIGITS.findall(part)]
                runs = _ALNUM_RUN.findall(part)
                for start in range(len(runs)):
                    joined = ""
                    for run in runs[start : start + MAX_GLUED_TOKENS]:
                        joined += run
                        glued.add(joined)
                tokens.append("\x00")  # no reference spans two texts, nor a date
        return tuple(tokens), frozenset(glued)

    def forms_for(self, numeric: bool) -> tuple[tuple[str, ...], frozenset[str]]:
        """The tokens and glued runs to look for a reference in (see :func:`reference_forms`)."""
        return (self.plain_tokens, self.plain_glued) if numeric else (self.tokens, self.glued)

    def quotes(self, reference: str) -> bool:
        """Whether the texts quote ``reference`` (see :func:`reference_forms`)."""
        forms = reference_forms(reference)
        if forms is None:
            return False
        tokens, glued = self.forms_for(forms.numeric)
        return forms.compact in glued or _has_sequence(tokens, forms.tokens)


def _has_sequence(tokens: tuple[str, ...], sequence: tuple[str, ...]) -> bool:
    width = len(sequence)
    return any(
        tokens[start : start + width] == sequence for start in range(len(tokens) - width + 1)
    )


class ReferenceBook:
    """The references of many open items, looked up from an operation's texts in time that
    grows with the texts, not with the number of items."""

    def __init__(self, items: Iterable[OpenItem]) -> None:
        # Per kind of reference (digits only or not): compact form and tokens -> item ids.
        self._by_compact: dict[bool, dict[str, set[int]]] = {False: {}, True: {}}
        self._by_tokens: dict[bool, dict[tuple[str, ...], set[int]]] = {False: {}, True: {}}
        self._widths: dict[bool, set[int]] = {False: set(), True: set()}
        self._references: dict[int, list[tuple[ReferenceForms, str]]] = {}
        for item in items:
            for reference in item.references:
                forms = reference_forms(reference)
                if forms is None:
                    continue
                kind = forms.numeric
                self._by_compact[kind].setdefault(forms.compact, set()).add(item.item_id)
                self._by_tokens[kind].setdefault(forms.tokens, set()).add(item.item_id)
                self._widths[kind].add(len(forms.tokens))
                self._references.setdefault(item.item_id, []).append((forms, reference))

    def quoted(self, index: TextIndex) -> dict[int, tuple[str, ...]]:
        """Items whose references the texts quote: ``{item id: (references quoted, ...)}``."""
        found: set[int] = set()
        seen: dict[bool, tuple[frozenset[str], set[tuple[str, ...]]]] = {}
        for numeric in (False, True):
            tokens, glued = index.forms_for(numeric)
            by_compact, by_tokens = self._by_compact[numeric], self._by_tokens[numeric]
            for run in glued:
                found |= by_compact.get(run, set())
            sequences: set[tuple[str, ...]] = set()
            for width in self._widths[numeric]:
                for start in range(len(tokens) - width + 1):
                    sequence = tokens[start : start + width]
                    if sequence in by_tokens:
                        sequences.add(sequence)
                        found |= by_tokens[sequence]
            seen[numeric] = (glued, sequences)
        return {
            item_id: tuple(
                reference
                for forms, reference in self._references[item_id]
                if forms.compact in seen[forms.numeric][0] or forms.tokens in seen[forms.numeric][1]
            )
            for item_id in found
        }


# --------------------------------------------------------------------------- counterparties

#: Words of company names that say nothing about who the company is.
_LEGAL_FORMS = frozenset(
    [
        "SA",
        "SAS",
        "SASU",
        "SARL",
        "EURL",
        "SNC",
        "SCI",
        "SCP",
        "SELARL",
        "SCOP",
        "GIE",
        "EI",
        "EIRL",
        "ETS",
        "STE",
        "SOC",
        "CIE",
        "ET",
        "FILS",
        "GMBH",
        "AG",
        "KG",
        "SRL",
        "SPRL",
        "BV",
        "NV",
        "LTD",
        "LIMITED",
        "PLC",
        "INC",
        "LLC",
        "CORP",
        "CO",
    ]
)
#: How banks start the labels of card payments, direct debits and transfers.
_LABEL_PREFIXES = (
    "PAIEMENT PAR CARTE",
    "PAIEMENT CB",
    "CARTE",
    "CB",
    "PRLV SEPA",
    "PRLV",
    "PRELEVEMENT SEPA",
    "PRELEVEMENT",
    "VIR SEPA EMIS",
    "VIR SEPA RECU",
    "VIR SEPA",
    "VIREMENT SEPA",
    "VIREMENT DE",
    "VIREMENT",
    "VIR",
    "ECHEANCE",
)
_NOISE = re.compile(
    r"\b(?:\d{1,2}/\d{1,2}(?:/\d{2,4})?|X+\d{2,}|\*+\d{2,}|\d{5,}|[A-Z]*\d[A-Z\d]*)\b"
)
#: Labels that name nobody: cheques, cash, the bank's own fees and interest.
_ANONYMOUS_LABELS = (
    "CHEQUE",
    "CHQ",
    "REMISE",
    "RETRAIT",
    "FRAIS",
    "COMMISSION",
    "INTERETS",
    "AGIOS",
    "COTISATION",
)
#: Words of a label after which the merchant's name is over (what it paid for, references).
_LABEL_STOP_WORDS = frozenset(
    [
        "FACT",
        "FACTURE",
        "FACTURES",
        "REF",
        "MOTIF",
        "ECHEANCE",
        "ABONNEMENT",
        "REGLEMENT",
        "ACOMPTE",
        "AVOIR",
        "PAIEMENT",
        "VERSEMENT",
        "SOLDE",
        "USD",
        "EUR",
        "GBP",
        "CHF",
    ]
)


def company_key(name: str | None) -> str:
    """A company's name as banks and books both write it: accents, case, punctuation and
    legal forms left out (``Orange S.A.`` and ``ORANGE SA`` give ``ORANGE``)."""
    words = re.findall(r"[A-Z0-9+]+", _ascii_upper(name or "").replace(".", ""))
    return " ".join(word for word in words if word not in _LEGAL_FORMS)


def counterparty_key(name: str | None, label: str | None = None) -> str:
    """Who is on the other side of an operation, as a key to recognise them again: the
    counterparty's name when the bank gives it, else the merchant named in the label (a card
    payment's ``CB CARREFOUR 12/11`` gives ``CARREFOUR``). Empty when nothing names anyone."""
    if name:
        return company_key(name)
    text = " ".join(_ascii_upper(label or "").split())
    if text.startswith(_ANONYMOUS_LABELS):
        return ""
    for prefix in _LABEL_PREFIXES:
        if text.startswith(prefix + " "):
            text = text[len(prefix) + 1 :]
            break
    words = []
    for word in _NOISE.sub(" ", text).split():
        if word in _LABEL_STOP_WORDS:
            break
        words.append(word)
    return company_key(" ".join(words[:4]))


# --------------------------------------------------------------------------- matching


#: How sure each kind of candidate is; an exact match keeps its items only if no other
#: operation of the batch claims them at least as surely.
SCORES = {
    "reference": 100,
    "references_sum": 95,
    "partner_amount": 80,
    "reference_completed": 75,
    "reference_currency": 72,
    "reference_partial": 70,
    "references_sum_partial": 60,
    "partner_sum": 50,
    "amount": 30,
}
#: A partner with more open items than this in one direction is not searched for two whose
#: total is the operation's amount (``partner_sum``): too many pairs to mean anything.
MAX_PAIRED_ITEMS = 60


class _Books:
    """The open items of one currency, indexed the ways the matcher looks them up."""

    def __init__(self, items: Iterable[OpenItem]) -> None:
        self.items: dict[int, OpenItem] = {}
        self.by_partner: dict[int | None, list[OpenItem]] = {}
        self.by_amount: dict[Decimal, list[OpenItem]] = {}
        for item in items:
            self.items[item.item_id] = item
            self.by_partner.setdefault(item.partner_id, []).append(item)
            self.by_amount.setdefault(item.amount, []).append(item)
        self.references = ReferenceBook(self.items.values())


def _candidates_for(
    operation: BankOperation, books: _Books
) -> tuple[list[Candidate], Candidate | None]:
    """All candidates of one operation, and the one that is exact (if unique in the batch)."""
    amount = operation.amount
    index = TextIndex.of(operation.texts)
    quoted = books.references.quoted(index)
    candidates: list[Candidate] = []

    def add(item_ids: Iterable[int], rule: str, refs: tuple[str, ...] = ()) -> Candidate:
        chosen = tuple(sorted(item_ids))
        total = sum((books.items[item_id].amount for item_id in chosen), Decimal(0))
        candidate = Candidate(chosen, rule, refs, total - amount, SCORES[rule])
        candidates.append(candidate)
        return candidate

    quoted_items = [books.items[item_id] for item_id in sorted(quoted)]
    partners = {item.partner_id for item in quoted_items}
    exact = _quoted_candidates(operation, quoted, quoted_items, partners, add)
    for partner in partners:
        # (Per partner: a mistyped number may well be another customer's document.)
        own_quoted = [item for item in quoted_items if item.partner_id == partner]
        _complete_quoted(operation, books, quoted, own_quoted, add)
    if operation.partner_id is not None and not quoted:
        _pair_partner_items(operation, books, add)
    if operation.partner_id is not None:
        own = books.by_partner.get(operation.partner_id, ())
        same_amount = [item for item in own if item.amount == amount]
        for item in same_amount:
            if item.item_id not in quoted:
                candidate = add([item.item_id], "partner_amount")
                if (
                    operation.partner_sure
                    and not quoted
                    and len(same_amount) == 1
                    and not _quotes_unknown_reference(index, own)
                ):
                    exact = candidate
    taken = {c.item_ids for c in candidates}
    for item in books.by_amount.get(amount, ()):
        if (item.item_id,) not in taken:
            add([item.item_id], "amount")
    return candidates, exact


def _quoted_candidates(operation, quoted, quoted_items, partners, add) -> Candidate | None:
    """The candidates of the items the operation quotes, and the exact one among them."""
    amount = operation.amount
    exact = None
    # A partner identified for the operation that owns none of the quoted items contradicts
    # the references: not sure enough to move money.
    contradicted = operation.partner_id is not None and operation.partner_id not in partners
    for item in quoted_items:
        rule = "reference" if item.amount == amount else "reference_partial"
        if rule == "reference_partial" and not _same_sign(amount, [item]):
            continue  # a payment does not pay part of a refund, nor the other way round
        candidate = add([item.item_id], rule, quoted[item.item_id])
        if len(quoted_items) == 1 and rule == "reference" and not contradicted:
            exact = candidate
    if len(quoted_items) > 1 and len(partners) == 1:
        refs = tuple(ref for item in quoted_items for ref in quoted[item.item_id])
        total = sum((item.amount for item in quoted_items), Decimal(0))
        rule = "references_sum" if total == amount else "references_sum_partial"
        # Paid in part, items are paid in turn: only when all go the operation's way (an
        # invoice and its credit note quoted together are settled when the total agrees).
        if rule == "references_sum" or _same_sign(amount, quoted_items):
            candidate = add([item.item_id for item in quoted_items], rule, refs)
            if rule == "references_sum" and not contradicted:
                exact = candidate
    return exact


def _complete_quoted(operation, books, quoted, quoted_items, add) -> None:
    """Quoted items of one partner that do not make the amount, completed by one more open
    item of that partner that makes the total exact (its number mistyped, perhaps into
    another customer's number, or not quoted): ``reference_completed``, a suggestion only."""
    total = sum((item.amount for item in quoted_items), Decimal(0))
    if total == operation.amount:
        return
    refs = tuple(ref for item in quoted_items for ref in quoted[item.item_id])
    for other in books.by_partner.get(quoted_items[0].partner_id, ()):
        if other.item_id not in quoted and total + other.amount == operation.amount:
            add(
                [*(item.item_id for item in quoted_items), other.item_id],
                "reference_completed",
                refs,
            )


def _pair_partner_items(operation, books, add) -> None:
    """Two open items of the operation's partner whose total is its amount (a transfer paying
    two invoices without quoting them): ``partner_sum``, a suggestion only."""
    own = [
        item
        for item in books.by_partner.get(operation.partner_id, ())
        if _same_sign(operation.amount, [item])
    ]
    if len(own) > MAX_PAIRED_ITEMS:
        return
    by_amount: dict[Decimal, list[OpenItem]] = {}
    for item in own:
        for other in by_amount.get(operation.amount - item.amount, ()):
            add([other.item_id, item.item_id], "partner_sum")
        by_amount.setdefault(item.amount, []).append(item)


def _other_currency_candidates(
    operation: BankOperation, books: dict[str, _Books], company_currency: str | None
) -> list[Candidate]:
    """Items of another currency whose references the texts of an operation in the company's
    currency quote (an invoice issued in dollars, paid in euros): ``reference_currency``,
    each alone and, for several of one partner and currency, together (an invoice with its
    credit note); a suggestion only, the rate being a person's to accept. Their difference is
    their residual in the company's currency (at their own rates) minus the operation's
    amount: the exchange difference, should they be settled in full."""
    own = operation.currency.upper()
    if company_currency is None or own != company_currency.upper():
        return []  # an operation in a foreign currency settles only items of its own
    others = [currency_books for currency, currency_books in books.items() if currency != own]
    if not others:
        return []
    index = TextIndex.of(operation.texts)
    candidates = []

    def add(items: Sequence[OpenItem], quoted: dict[int, tuple[str, ...]]) -> None:
        residuals = [item.amount_company for item in items]
        difference = (
            sum(residuals, Decimal(0)) - operation.amount if None not in residuals else Decimal(0)
        )
        candidates.append(
            Candidate(
                tuple(sorted(item.item_id for item in items)),
                "reference_currency",
                tuple(ref for item in items for ref in quoted[item.item_id]),
                difference,
                SCORES["reference_currency"],
            )
        )

    for currency_books in others:
        quoted = currency_books.references.quoted(index)
        by_partner: dict[int | None, list[OpenItem]] = {}
        for item_id in sorted(quoted):
            item = currency_books.items[item_id]
            by_partner.setdefault(item.partner_id, []).append(item)
        for items in by_partner.values():
            for item in items:
                if _same_sign(operation.amount, [item]):
                    add([item], quoted)
            total = sum((item.amount for item in items), Decimal(0))
            if len(items) > 1 and total != 0 and (total > 0) == (operation.amount > 0):
                add(items, quoted)
    return candidates


def _same_sign(amount: Decimal, items: Iterable[OpenItem]) -> bool:
    return all((item.amount > 0) == (amount > 0) for item in items) and amount != 0


def _quotes_unknown_reference(index: TextIndex, own: Sequence[OpenItem]) -> bool:
    """Whether the texts carry what looks like a document number of the partner's series
    (its letters followed by digits) that is none of its open items: a typo, or a document
    already paid. A match on the amount alone is then no longer sure."""
    prefixes = {
        forms.tokens[0]
        for item in own
        for ref in item.references
        if (forms := reference_forms(ref)) and not forms.tokens[0].isdigit()
    }
    tokens = index.tokens
    return any(
        token in prefixes and position + 1 < len(tokens) and tokens[position + 1].isdigit()
        for position, token in enumerate(tokens)
    )


def match_operations(
    operations: Sequence[BankOperation],
    items: Sequence[OpenItem],
    company_currency: str | None = None,
) -> list[Decision]:
    """Decide for each operation (see the module's docstring).

    ``items`` are the company's open items, whose currency is ``company_currency``. Only
    those in the operation's currency may settle it for sure; those in another currency are
    suggested when quoted. An exact match whose items another operation of the batch claims
    at least as surely becomes a suggestion: nobody decides between two payments on behalf of
    a person.
    """
    by_currency: dict[str, list[OpenItem]] = {}
    for item in items:
        by_currency.setdefault(item.currency.upper(), []).append(item)
    books = {currency: _Books(group) for currency, group in by_currency.items()}

    found: list[tuple[BankOperation, list[Candidate], Candidate | None]] = []
    claims: dict[int, list[tuple[int, int]]] = {}
    for operation in operations:
        currency_books = books.get(operation.currency.upper())
        candidates, exact = (
            _candidates_for(operation, currency_books) if currency_books else ([], None)
        )
        candidates += _other_currency_candidates(operation, books, company_currency)
        for candidate in candidates:
            for item_id in candidate.item_ids:
                claims.setdefault(item_id, []).append((candidate.score, operation.line_id))
        found.append((operation, candidates, exact))

    decisions = []
    for operation, candidates, exact in found:
        disputed = exact is not None and any(
            score >= exact.score and line_id != operation.line_id
            for item_id in exact.item_ids
            for score, line_id in claims[item_id]
        )
        applied = None if disputed else exact
        ranked = sorted(candidates, key=lambda c: (-c.score, abs(c.difference), c.item_ids))
        unique: list[Candidate] = []
        for candidate in ranked:
            if candidate is not applied and candidate.item_ids not in {c.item_ids for c in unique}:
                unique.append(candidate)
        decisions.append(Decision(operation.line_id, applied, tuple(unique[:MAX_SUGGESTIONS])))
    return decisions

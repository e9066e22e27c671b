"""Pure synchronisation logic: keys, page diffs, window planning, twin adoption, balances.

Nothing here touches a database or the network. The Odoo addon (and the benchmarks) feed these
functions with what they read from the aggregator and from the ledger, and apply the decisions
they return. Keeping the decisions pure makes every rule of the engine testable in milliseconds:

- :func:`sync_key` / :func:`transaction_keys`: the stable identity of an operation, stored on
  the statement line and enforced unique per journal by the database;
- :func:`diff_page`: what one page of operations means for the ledger (create, update, delete,
  flag for review, skip pending, skip ignored);
- :func:`plan_window`: where a run starts and ends (stored cursor, overlap, history start, or
  the user's forced window), with clear errors on impossible ranges;
- :func:`match_twins`: which hand-entered or file-imported lines the synced operations adopt;
- :func:`check_balance` and :func:`opening_amount`: the aggregator's balance against the
  journal's, with debts (cards, loans) signed as the ledger signs them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from .errors import SyncPlanError
from .model import AccountType, Cursor, Transaction

#: How many days before the last booked date an incremental run re-reads, to catch operations
#: the bank books late or back-dates (docs/aggregators.md §4: 7 to 14 days).
DEFAULT_OVERLAP_DAYS = 10

#: How far, in days, a hand-entered line's date may be from the bank's booking date and still
#: be the same operation (a cheque typed on the day it is written, booked two days later).
DEFAULT_TWIN_WINDOW_DAYS = 3

#: Length of a sync key: 32 hex digits (128 bits) keeps collisions out of reach while fitting
#: comfortably in an index.
KEY_LENGTH = 32

#: Fields of an operation that the aggregator may change after first reporting it, and that
#: the ledger mirrors while a line carries none of the accountant's work yet.
MUTABLE_FIELDS: tuple[str, ...] = (
    "label",
    "booking_date",
    "amount",
    "value_date",
    "foreign_amount",
    "foreign_currency",
    "counterparty_name",
    "counterparty_account",
    "bank_reference",
    "operation_type",
)

#: Words that every bank puts in its labels: sharing them says nothing about two labels being
#: the same operation, so the twin matcher ignores them.
_GENERIC_WORDS = frozenset(
    {
        "VIR",
        "VIREMENT",
        "SEPA",
        "PRLV",
        "PRELEVEMENT",
        "CB",
        "CARTE",
        "PAIEMENT",
        "PAYMENT",
        "TRANSFER",
        "RECU",
        "EMIS",
        "INST",
        "FACTURE",
        "REF",
        "DU",
        "DE",
        "LA",
        "LE",
        "LES",
        "DES",
        "ET",
        "THE",
        "AND",
        "FOR",
        "EUR",
        "SA",
        "SAS",
        "SARL",
    }
)


# --------------------------------------------------------------------------- keys


def _digest(*parts: str) -> str:
    # The unit separator cannot occur in ids or labels, so ("a", "bc") and ("ab", "c") differ.
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:KEY_LENGTH]


def sync_key(kind: str, account_id: str, transaction_id: str) -> str:
    """The stable key of an operation that the aggregator identifies.

    Built from the aggregator kind, the remote account id and the remote transaction id, so
    that two aggregators (or two accounts) reusing the same transaction id never collide.
    """
    if not transaction_id:
        raise ValueError("sync_key needs a transaction id; use fingerprint() without one")
    return _digest("id", kind, str(account_id), str(transaction_id))


def normalise_text(text: str | None) -> str:
    """Upper-case ASCII words separated by single spaces (accents and punctuation dropped)."""
    if not text:
        return ""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(re.findall(r"[A-Z0-9]+", ascii_text.upper()))


def fingerprint(kind: str, tx: Transaction, occurrence: int = 0) -> str:
    """Fallback key for an operation that comes without an id.

    Account, amount, currency, booking date and normalised label identify it; ``occurrence``
    tells apart identical operations on the same day (two 2.50 EUR coffees), counted in the
    order the aggregator lists them.
    """
    return _digest(
        "fp",
        kind,
        str(tx.account_id),
        f"{tx.amount.normalize():f}",
        tx.currency.upper(),
        tx.booking_date.isoformat(),
        normalise_text(tx.label),
        str(occurrence),
    )


def transaction_keys(kind: str, transactions: Iterable[Transaction]) -> list[str]:
    """The key of each operation of a page, in order (ids first, fingerprint otherwise)."""
    seen: Counter[tuple[str, str, str, date, str]] = Counter()
    keys = []
    for tx in transactions:
        if tx.remote_id:
            keys.append(sync_key(kind, tx.account_id, tx.remote_id))
            continue
        ident = (tx.account_id, str(tx.amount), tx.currency, tx.booking_date, tx.label)
        keys.append(fingerprint(kind, tx, seen[ident]))
        seen[ident] += 1
    return keys


# --------------------------------------------------------------------------- page diff


@dataclass(frozen=True)
class LineSnapshot:
    """What the ledger holds for one synced operation (one statement line)."""

    line_id: int
    label: str
    booking_date: date
    amount: Decimal
    #: The line carries the accountant's work (a reconciliation, even partial, a write-off or
    #: a counterpart chosen by hand, a note): the sync never rewrites nor deletes it, it asks.
    protected: bool = False
    value_date: date | None = None
    foreign_amount: Decimal | None = None
    foreign_currency: str | None = None
    counterparty_name: str | None = None
    counterparty_account: str | None = None
    bank_reference: str | None = None
    operation_type: str | None = None
    #: True once the line was flagged because the bank deleted its operation.
    deleted_flag: bool = False


@dataclass(frozen=True)
class LineChange:
    """An operation whose mutable fields differ from the ledger: field -> (old, new)."""

    key: str
    line_id: int
    transaction: Transaction
    changes: Mapping[str, tuple[Any, Any]]


@dataclass(frozen=True)
class PageDiff:
    """What to do with one page of operations; every operation lands in exactly one list."""

    #: New booked operations: (key, transaction), to create in one batch.
    create: tuple[tuple[str, Transaction], ...] = ()
    #: Unprotected lines whose operation changed: write the new values.
    update: tuple[LineChange, ...] = ()
    #: Protected lines whose operation changed: record for review, never rewrite.
    review: tuple[LineChange, ...] = ()
    #: Unprotected lines whose operation the bank deleted: (key, line id), to remove.
    delete: tuple[tuple[str, int], ...] = ()
    #: Protected lines whose operation the bank deleted: (key, line id), to flag.
    flag_deleted: tuple[tuple[str, int], ...] = ()
    #: Pending operations with no line yet: kept out of the books until booked.
    pending: tuple[tuple[str, Transaction], ...] = ()
    #: Operations the user asked never to import again.
    ignored: tuple[tuple[str, Transaction], ...] = ()
    #: Operations already in the ledger exactly as reported (or deleted and already gone).
    unchanged: tuple[str, ...] = ()
    #: Operations reported twice in the same page (the later sighting wins).
    duplicates: tuple[str, ...] = field(default=())

    @property
    def fetched(self) -> int:
        """How many distinct operations the page carried."""
        return (
            len(self.create)
            + len(self.update)
            + len(self.review)
            + len(self.delete)
            + len(self.flag_deleted)
            + len(self.pending)
            + len(self.ignored)
            + len(self.unchanged)
        )


def baseline(tx: Transaction) -> dict[str, str | None]:
    """The operation's mutable fields as plain JSON values: what the bank said when the ledger
    last took the operation into account (created, updated or flagged its line).

    Kept with the line, it lets the next sighting be compared with the bank's previous words
    instead of with the line: what a person typed on the line is not mistaken for a change at
    the bank, and is never overwritten unless the bank really changed the operation.
    """

    def text(value: Any) -> str | None:
        if value is None:
            return None
        return value.isoformat() if isinstance(value, date) else str(value)

    return {name: text(getattr(tx, name)) for name in MUTABLE_FIELDS}


def snapshot_from_baseline(
    line_id: int,
    data: Mapping[str, str | None],
    *,
    protected: bool = False,
    deleted_flag: bool = False,
) -> LineSnapshot:
    """A :class:`LineSnapshot` from a :func:`baseline` kept with a line."""

    def day(value: str | None) -> date | None:
        return date.fromisoformat(value) if value else None

    def amount(value: str | None) -> Decimal | None:
        return Decimal(value) if value is not None else None

    return LineSnapshot(
        line_id=line_id,
        label=data.get("label") or "",
        booking_date=day(data.get("booking_date")),  # type: ignore[arg-type]
        amount=amount(data.get("amount")) or Decimal(0),
        protected=protected,
        value_date=day(data.get("value_date")),
        foreign_amount=amount(data.get("foreign_amount")),
        foreign_currency=data.get("foreign_currency"),
        counterparty_name=data.get("counterparty_name"),
        counterparty_account=data.get("counterparty_account"),
        bank_reference=data.get("bank_reference"),
        operation_type=data.get("operation_type"),
        deleted_flag=deleted_flag,
    )


def snapshot_changes(snapshot: LineSnapshot, tx: Transaction) -> dict[str, tuple[Any, Any]]:
    """Mutable fields whose reported value differs from the ledger's: field -> (old, new).

    Amounts compare as numbers (``12.5`` equals ``12.50``); empty strings equal ``None``.
    """
    changes: dict[str, tuple[Any, Any]] = {}
    for name in MUTABLE_FIELDS:
        old = getattr(snapshot, name)
        new = getattr(tx, name)
        if name in ("label", "counterparty_name", "counterparty_account", "bank_reference"):
            old, new = (old or "").strip() or None, (new or "").strip() or None
            if name == "label":
                old, new = old or "", new or ""
        elif name == "operation_type":
            old, new = old or None, new or None
        elif name == "foreign_currency":
            old, new = (old or "").upper() or None, (new or "").upper() or None
        if isinstance(old, Decimal) and isinstance(new, Decimal):
            if old.compare(new) == 0:
                continue
        elif old == new:
            continue
        changes[name] = (old, new)
    return changes


def _classify(
    key: str, tx: Transaction, line: LineSnapshot | None, ignored: bool
) -> tuple[str, Any]:
    """The :class:`PageDiff` list one operation goes to, and the item to put there."""
    if ignored:
        return "ignored", (key, tx)
    if tx.deleted:
        if line is None or line.deleted_flag:
            return "unchanged", key
        return ("flag_deleted" if line.protected else "delete"), (key, line.line_id)
    if line is None:
        return ("pending" if tx.is_pending else "create"), (key, tx)
    changes = snapshot_changes(line, tx)
    if not changes:
        return "unchanged", key
    return ("review" if line.protected else "update"), LineChange(key, line.line_id, tx, changes)


def diff_page(
    transactions: Sequence[Transaction],
    keys: Sequence[str],
    existing: Mapping[str, LineSnapshot],
    ignored: Iterable[str] = (),
) -> PageDiff:
    """Decide what one page means for the ledger.

    ``keys`` are the page's keys (see :func:`transaction_keys`), ``existing`` maps the keys
    already in the journal to their line, ``ignored`` holds keys the user excluded for good.
    """
    if len(transactions) != len(keys):
        raise ValueError("diff_page needs exactly one key per transaction")
    ignored_keys = set(ignored)
    # The later sighting of an operation wins: pages built while data changes may repeat one.
    latest: dict[str, Transaction] = {}
    duplicates: list[str] = []
    for key, tx in zip(keys, transactions, strict=True):
        if key in latest:
            duplicates.append(key)
            del latest[key]  # re-insert to keep the order of the last sighting
        latest[key] = tx

    out: dict[str, list[Any]] = defaultdict(list)
    for key, tx in latest.items():
        bucket, item = _classify(key, tx, existing.get(key), key in ignored_keys)
        out[bucket].append(item)
    return PageDiff(
        create=tuple(out["create"]),
        update=tuple(out["update"]),
        review=tuple(out["review"]),
        delete=tuple(out["delete"]),
        flag_deleted=tuple(out["flag_deleted"]),
        pending=tuple(out["pending"]),
        ignored=tuple(out["ignored"]),
        unchanged=tuple(out["unchanged"]),
        duplicates=tuple(duplicates),
    )


# --------------------------------------------------------------------------- window


@dataclass(frozen=True)
class SyncWindow:
    """Where one run reads: a provider cursor, or a date window (inclusive bounds)."""

    cursor: Cursor | None
    date_from: date | None
    date_to: date
    #: ``cursor``, ``overlap``, ``history`` or ``forced``: why the window is what it is.
    basis: str

    @property
    def forced(self) -> bool:
        """A forced run re-reads the user's range and leaves the stored cursor alone."""
        return self.basis == "forced"


def validate_range(date_from: date | None, date_to: date | None, today: date) -> None:
    """Refuse an inverted range or one reaching into the future, with a sentence that says so."""
    for label, value in (("start", date_from), ("end", date_to)):
        if value and value > today:
            raise SyncPlanError(
                f"The {label} date ({value.isoformat()}) is in the future: the bank cannot "
                f"have booked operations after today ({today.isoformat()}).",
                code="future",
            )
    if date_from and date_to and date_from > date_to:
        raise SyncPlanError(
            f"The start date ({date_from.isoformat()}) is after the end date "
            f"({date_to.isoformat()}).",
            code="inverted",
        )


def plan_window(
    *,
    today: date,
    cursor: Cursor | None = None,
    last_booked_date: date | None = None,
    history_start: date | None = None,
    overlap_days: int = DEFAULT_OVERLAP_DAYS,
    forced_from: date | None = None,
    forced_to: date | None = None,
    forced: bool = False,
) -> SyncWindow:
    """Plan a run.

    - a forced run reads exactly the user's range (``forced_from`` is required);
    - otherwise a stored cursor resumes the stream where the last stored page ended;
    - otherwise the last booked date minus ``overlap_days`` (never before the history start);
    - otherwise, on a first sync, from the history start date.
    """
    if overlap_days < 0:
        raise SyncPlanError("The overlap cannot be negative.", code="overlap")
    if forced or forced_from or forced_to:
        if forced_from is None:
            raise SyncPlanError("A forced synchronisation needs a start date.", code="missing")
        end = forced_to or today
        validate_range(forced_from, end, today)
        return SyncWindow(cursor=None, date_from=forced_from, date_to=end, basis="forced")
    if history_start and history_start > today:
        raise SyncPlanError(
            f"The history start date ({history_start.isoformat()}) is in the future.",
            code="future",
        )
    if cursor is not None:
        return SyncWindow(cursor=cursor, date_from=None, date_to=today, basis="cursor")
    if last_booked_date is not None:
        start = min(last_booked_date, today) - timedelta(days=overlap_days)
        if history_start and start < history_start:
            start = history_start
        return SyncWindow(cursor=None, date_from=start, date_to=today, basis="overlap")
    return SyncWindow(cursor=None, date_from=history_start, date_to=today, basis="history")


# --------------------------------------------------------------------------- twins


@dataclass(frozen=True)
class TwinCandidate:
    """A line of the same journal that no sync created (typed by hand, imported from a file)."""

    line_id: int
    date: date
    amount: Decimal
    label: str = ""
    reference: str | None = None


@dataclass(frozen=True)
class TwinMatches:
    """Outcome of :func:`match_twins`."""

    #: key -> the line the operation adopts instead of creating a new one.
    adopt: Mapping[str, int]
    #: key -> the candidate lines that fit it equally well: created anew, listed for review.
    ambiguous: Mapping[str, tuple[int, ...]]


def _significant_words(text: str | None) -> set[str]:
    return {w for w in normalise_text(text).split() if len(w) >= 3 and w not in _GENERIC_WORDS}


def references_compatible(candidate: TwinCandidate, tx: Transaction) -> bool:
    """Whether a line's label/reference can describe the operation.

    An empty side says nothing and is compatible; otherwise the two must share a significant
    word, or one compacted text must contain the other (``FA2025-001`` in
    ``VIR ACME FA2025001``).
    """
    line_text = " ".join(filter(None, (candidate.label, candidate.reference)))
    tx_text = " ".join(filter(None, (tx.label, tx.bank_reference, tx.counterparty_name)))
    line_words, tx_words = _significant_words(line_text), _significant_words(tx_text)
    if not normalise_text(line_text) or not normalise_text(tx_text):
        return True
    if line_words & tx_words:
        return True
    # References are often typed with other separators: "FA2025001" for "FA2025-001".
    line_compact = _compact(line_text)
    tx_compact = _compact(tx_text)
    # The whole label copied (a file import, a line typed from the statement).
    if len(min(line_compact, tx_compact, key=len)) >= 4 and (
        line_compact in tx_compact or tx_compact in line_compact
    ):
        return True
    line_tokens = {_compact(w) for w in line_words} | {_compact(candidate.reference)}
    tx_tokens = {_compact(w) for w in tx_words} | {_compact(tx.bank_reference)}
    return any(len(t) >= 4 and t in tx_compact for t in line_tokens) or any(
        len(t) >= 4 and t in line_compact for t in tx_tokens
    )


def _compact(text: str | None) -> str:
    return normalise_text(text).replace(" ", "")


def match_twins(
    operations: Sequence[tuple[str, Transaction]],
    candidates: Sequence[TwinCandidate],
    *,
    window_days: int = DEFAULT_TWIN_WINDOW_DAYS,
) -> TwinMatches:
    """Pair new operations with existing unsynced lines of the same journal.

    A pair needs the same amount, dates at most ``window_days`` apart and compatible
    references. Only one-to-one pairs are adopted: when an operation fits several lines, or a
    line fits several operations, all of them are ambiguous (a person decides).
    """
    fits: dict[str, list[int]] = {}
    claimed: Counter[int] = Counter()
    for key, tx in operations:
        found = [
            c.line_id
            for c in candidates
            if c.amount.compare(tx.amount) == 0
            and abs((c.date - tx.booking_date).days) <= window_days
            and references_compatible(c, tx)
        ]
        if found:
            fits[key] = found
            claimed.update(found)
    adopt: dict[str, int] = {}
    ambiguous: dict[str, tuple[int, ...]] = {}
    for key, found in fits.items():
        if len(found) == 1 and claimed[found[0]] == 1:
            adopt[key] = found[0]
        else:
            ambiguous[key] = tuple(sorted(found))
    return TwinMatches(adopt=adopt, ambiguous=ambiguous)


# --------------------------------------------------------------------------- balances

#: Account types whose balance is a debt: the ledger shows it negative whatever sign the
#: aggregator uses (Bridge reports loans as negative, others as the positive capital due).
DEBT_TYPES = frozenset({AccountType.CARD, AccountType.LOAN})


def ledger_balance(balance: Decimal, account_type: AccountType | str) -> Decimal:
    """The aggregator's balance as the journal should show it (debts are negative)."""
    if AccountType(account_type) in DEBT_TYPES:
        return -abs(balance)
    return balance


@dataclass(frozen=True)
class BalanceCheck:
    """The aggregator's balance against the journal's."""

    expected: Decimal
    journal: Decimal
    difference: Decimal

    @property
    def ok(self) -> bool:
        """True when both agree to the cent (or the currency's smallest unit)."""
        return self.difference == 0


def check_balance(
    *,
    aggregator_balance: Decimal,
    journal_balance: Decimal,
    account_type: AccountType | str = AccountType.CHECKING,
    pending_total: Decimal = Decimal(0),
    digits: int = 2,
) -> BalanceCheck:
    """Compare balances; ``difference`` is journal minus expected, rounded to ``digits``.

    ``pending_total`` is the sum of pending operations included in the aggregator's balance
    (an "instant" balance): they are not in the books yet, so they come off the expectation.
    """
    quantum = Decimal(1).scaleb(-digits)
    expected = (ledger_balance(aggregator_balance, account_type) - pending_total).quantize(quantum)
    journal = Decimal(journal_balance).quantize(quantum)
    return BalanceCheck(expected=expected, journal=journal, difference=journal - expected)


def opening_amount(
    *,
    aggregator_balance: Decimal,
    imported_total: Decimal,
    account_type: AccountType | str = AccountType.CHECKING,
    pending_total: Decimal = Decimal(0),
    digits: int = 2,
) -> Decimal:
    """Amount of the opening line that makes a fresh journal's balance equal the bank's.

    ``imported_total`` is the sum of the booked lines the first sync created.
    """
    check = check_balance(
        aggregator_balance=aggregator_balance,
        journal_balance=imported_total,
        account_type=account_type,
        pending_total=pending_total,
        digits=digits,
    )
    return -check.difference


# --------------------------------------------------------------------------- statements


def statement_period(booking_date: date, grouping: str) -> str | None:
    """The statement a line belongs to: ``None`` (no statement), a day or a month."""
    if grouping in ("none", "", None):
        return None
    if grouping == "day":
        return booking_date.isoformat()
    if grouping == "month":
        return booking_date.strftime("%Y-%m")
    raise ValueError(f"Unknown statement grouping: {grouping!r}")

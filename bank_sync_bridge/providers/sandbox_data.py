"""Deterministic demo data for the sandbox aggregator: banks, IBANs and two years of operations.

Everything here is a pure function of its arguments: the same key, seed and horizon always give
the same accounts and operations, in any process. Operations are generated day by day from a
fixed history start, with one random stream seeded once per connection, so extending the horizon
(the clock moving forward) only appends days and never changes what was generated before.

Each operation is a list of *versions*, each visible from an instant: a card payment is pending
when made and booked two days later under the same id; a scripted incident may delete an
operation, rename it or make it appear late. :func:`version_at` picks the version a client sees at
a given instant, and that version's ``updated_at`` is the instant it became visible, which is what
the sandbox's incremental cursor relies on.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from ..iban import french_iban, iban_check_digits
from ..model import AccountType, Institution, Transaction, TransactionStatus
from ._common import fold as fold_accents

#: Hour (UTC) at which the bank publishes the operations it booked that day.
BOOKING_HOUR = 6
#: Length of the generated history before the connection date.
HISTORY_DAYS = 730
CURRENCY = "EUR"
CENT = Decimal("0.01")

# ---------------------------------------------------------------------------------------------
# Banks


@dataclass(frozen=True)
class SandboxBank:
    """One demo bank: BIC-like id, display data and the French bank code used in its IBANs."""

    bic: str
    name: str
    country: str
    popularity: int
    color: str
    bank_code: str
    group: str | None = None

    def institution(self) -> Institution:
        """The canonical :class:`Institution` for this bank."""
        return Institution(
            remote_id=self.bic,
            name=self.name,
            country=self.country,
            logo_url=logo_data_url(self.name, self.color),
            group_name=self.group,
            bic=self.bic,
            popularity=self.popularity,
        )


#: The demo banks, most requested first (popularity mirrors what French users ask for most).
BANKS: tuple[SandboxBank, ...] = (
    SandboxBank("BNPAFRPP", "BNP Paribas", "FR", 1000, "#00915A", "30004", "BNP Paribas"),
    SandboxBank("AGRIFRPP", "Crédit Agricole", "FR", 980, "#007A78", "18206", "Crédit Agricole"),
    SandboxBank("SOGEFRPP", "Société Générale", "FR", 960, "#E9041E", "30003", "Société Générale"),
    SandboxBank("PSSTFRPP", "La Banque Postale", "FR", 940, "#003DA5", "20041"),
    SandboxBank("CEPAFRPP", "Caisse d'Épargne", "FR", 920, "#D8001D", "17515", "BPCE"),
    SandboxBank("CCBPFRPP", "Banque Populaire", "FR", 900, "#0066B3", "10207", "BPCE"),
    SandboxBank("CRLYFRPP", "LCL", "FR", 880, "#1D3C8F", "30002", "Crédit Agricole"),
    SandboxBank("CMCIFR2A", "Crédit Mutuel", "FR", 860, "#E2001A", "10278", "Crédit Mutuel"),
    SandboxBank("CMCIFRPP", "CIC", "FR", 840, "#006EB7", "30066", "Crédit Mutuel"),
    SandboxBank("BOUSFRPP", "Boursorama Banque", "FR", 700, "#E5007D", "40618", "Société Générale"),
    SandboxBank("QNTOFRP1", "Qonto", "FR", 680, "#1D1D1B", "16958"),
    SandboxBank("SHNEFRP1", "Shine", "FR", 640, "#2F5BEA", "17418"),
    SandboxBank("HELLFRPP", "Hello bank!", "FR", 500, "#00A3E0", "30004", "BNP Paribas"),
    SandboxBank("FTNOFRP1", "Fortuneo", "FR", 460, "#6AB023", "14940", "Crédit Mutuel"),
    SandboxBank("CCFRFRPP", "HSBC Continental Europe", "FR", 420, "#DB0011", "30056"),
    SandboxBank("CCOPFRPP", "Crédit Coopératif", "FR", 380, "#E30613", "42559", "BPCE"),
    SandboxBank("GEBABEBB", "BNP Paribas Fortis", "BE", 300, "#00965E", "001", "BNP Paribas"),
    SandboxBank("BSCHESMM", "Banco Santander", "ES", 280, "#EC0000", "0049"),
    SandboxBank("DEUTDEFF", "Deutsche Bank", "DE", 260, "#0018A8", "50070010"),
)


def bank_by_id(bank_id: str) -> SandboxBank | None:
    """The demo bank whose id is ``bank_id``, or None."""
    for bank in BANKS:
        if bank.bic == bank_id:
            return bank
    return None


def logo_data_url(name: str, color: str) -> str:
    """A tiny inline SVG logo (initials on the bank's colour), so no network is needed."""
    words = [w for w in fold(name).upper().replace("!", "").split() if w not in {"LA", "DE"}]
    initials = "".join(w[0] for w in words[:3]) or "?"
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        f'<rect width="64" height="64" rx="12" fill="{color}"/>'
        '<text x="32" y="40" font-family="Arial,sans-serif" font-size="20" font-weight="bold" '
        f'fill="#fff" text-anchor="middle">{initials}</text></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def fold(text: str) -> str:
    """Lower-case, accent-free, punctuation-as-space text, for searches that forgive both."""
    bare = fold_accents(text)
    cleaned = "".join(c if c.isalnum() else " " for c in bare)
    return " ".join(cleaned.split())


# ---------------------------------------------------------------------------------------------
# IBANs


def _digits(key: str, count: int) -> str:
    """``count`` digits derived from ``key`` (stable across processes, unlike ``hash()``)."""
    number = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    return str(number)[-count:].rjust(count, "0")


def counterparty_iban(name: str, country: str = "FR") -> str:
    """A stable, valid IBAN for a named counterparty (the same name always gets the same)."""
    if country == "BE":
        first = _digits("be" + name, 10)
        check = int(first) % 97 or 97
        bban = f"{first}{check:02d}"
        return "BE" + iban_check_digits("BE", bban) + bban
    if country == "DE":
        bban = "37040044" + _digits("de" + name, 10)
        return "DE" + iban_check_digits("DE", bban) + bban
    codes = ("30004", "30003", "20041", "30002", "10278", "30066", "18206", "16958")
    bank_code = codes[int(_digits("bank" + name, 4)) % len(codes)]
    return french_iban(bank_code, _digits("branch" + name, 5), _digits("acct" + name, 11))


def swap_digits(reference: str) -> str:
    """``reference`` with its last two different digits swapped (``INV/2026/00042`` gives
    ``INV/2026/00024``): the typo a person makes copying a number; unchanged without two."""
    digits = [i for i, ch in enumerate(reference) if ch.isdigit()]
    for right in reversed(range(1, len(digits))):
        a, b = digits[right - 1], digits[right]
        if reference[a] != reference[b]:
            chars = list(reference)
            chars[a], chars[b] = chars[b], chars[a]
            return "".join(chars)
    return reference


def mask(number: str, keep: int = 4) -> str:
    """A number with all but its last ``keep`` characters hidden, as banks display it."""
    return "*" * min(7, max(0, len(number) - keep)) + number[-keep:]


# ---------------------------------------------------------------------------------------------
# Calendar


def _easter(year: int) -> date:
    """Easter Sunday (anonymous Gregorian algorithm), for the French movable holidays."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 19 * l_) // 433
    month = (h + l_ - 7 * m + 90) // 25
    day = (h + l_ - 7 * m + 33 * month + 19) % 32
    return date(year, month, day)


def french_holidays(year: int) -> frozenset[date]:
    """French bank holidays of ``year`` (banks book nothing on those days)."""
    easter = _easter(year)
    fixed = ((1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25))
    movable = (easter + timedelta(days=1), easter + timedelta(days=39), easter + timedelta(50))
    return frozenset({date(year, m, d) for m, d in fixed} | set(movable))


def is_working_day(day: date, holidays: frozenset[date]) -> bool:
    """Monday to Friday and not a bank holiday."""
    return day.weekday() < 5 and day not in holidays


# ---------------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True)
class SandboxOperation:
    """One operation and its successive versions, oldest first.

    Each version is a full :class:`Transaction` whose ``updated_at`` is the instant it became
    visible to clients; before the first one the operation does not exist yet.
    """

    versions: tuple[Transaction, ...]

    @property
    def remote_id(self) -> str:
        """The id of the operation (the same in all its versions)."""
        return self.versions[0].remote_id


def version_at(operation: SandboxOperation, instant: datetime) -> Transaction | None:
    """The version visible at ``instant``, or None when the operation is not visible yet."""
    current = None
    for version in operation.versions:
        if version.updated_at is not None and version.updated_at <= instant:
            current = version
        else:
            break
    return current


@dataclass(frozen=True)
class SandboxAccountData:
    """One generated account: identity, opening balance and operations."""

    kind: AccountType
    remote_id: str
    label: str
    masked_number: str
    iban: str | None
    opening_balance: Decimal
    history_start: date
    operations: tuple[SandboxOperation, ...]
    currency: str = CURRENCY


# Counterparties: (name, IBAN country). Names are fictitious French-style businesses.
CUSTOMERS: tuple[tuple[str, str], ...] = (
    ("ACME SARL", "FR"),
    ("BOULANGERIE MARTIN", "FR"),
    ("DUPONT ET FILS SAS", "FR"),
    ("ATELIER DES CAPUCINS", "FR"),
    ("HOTEL DU PORT SARL", "FR"),
    ("GARAGE LEFEBVRE", "FR"),
    ("CABINET MOREAU AVOCATS", "FR"),
    ("COMMUNE DE VILLEURBANNE", "FR"),
    ("LES JARDINS DE PROVENCE", "FR"),
    ("TRANSPORTS ROUX", "FR"),
    ("CLINIQUE VETERINAIRE DU PARC", "FR"),
    ("NEXTEO CONSULTING", "FR"),
    ("BRASSERIE DU CANAL", "FR"),
    ("ASSOCIATION SPORTIVE ST JEAN", "FR"),
    ("BELGIAN FINE FOODS SRL", "BE"),
    ("MULLER MASCHINENBAU GMBH", "DE"),
)
SUPPLIERS: tuple[str, ...] = (
    "FOURNITURES PRO SAS",
    "IMPRIMERIE DUVAL",
    "LOCAMAT SERVICES",
    "CABINET COMPTA EXPERTS",
    "NETTOYAGE GENERAL SERVICES",
    "TRANSPORTS GIRAUD",
    "AGENCE WEB PIXEL",
    "GROSSISTE RHONE DISTRIBUTION",
)
# (merchant, low, high) in euros, for card payments.
MERCHANTS: tuple[tuple[str, float, float], ...] = (
    ("CARREFOUR", 20, 180),
    ("TOTALENERGIES", 40, 110),
    ("SNCF INTERNET", 35, 160),
    ("LEROY MERLIN", 15, 400),
    ("AMAZON PAYMENTS", 10, 250),
    ("BURO+", 12, 90),
    ("METRO", 60, 500),
    ("LA POSTE", 5, 40),
    ("AUTOROUTE APRR", 3, 25),
    ("RESTAURANT LE CANAL", 18, 95),
    ("IKEA", 30, 300),
    ("UBER", 10, 45),
    ("BOULANGERIE PAUL", 4, 25),
)
# (creditor, day of month, base amount, relative spread, label detail)
DIRECT_DEBITS: tuple[tuple[str, int, float, float, str], ...] = (
    ("ORANGE SA", 5, 89.90, 0.05, "FACTURE MOBILE PRO"),
    ("EDF", 12, 240.0, 0.35, "ECHEANCE ELECTRICITE"),
    ("OVH SAS", 3, 35.99, 0.0, "HEBERGEMENT WEB"),
    ("AXA FRANCE IARD", 8, 185.40, 0.0, "MULTIRISQUE PRO"),
    ("ALAN SA", 2, 290.0, 0.1, "MUTUELLE SALARIES"),
    ("SAGE SAS", 1, 59.0, 0.0, "ABONNEMENT LOGICIEL"),
)
EMPLOYEES: tuple[str, ...] = (
    "M. DUPONT JEAN",
    "MME MARTIN CLAIRE",
    "M. BERNARD LUCAS",
    "MME PETIT SARAH",
    "M. ROBERT HUGO",
    "MME RICHARD EMMA",
    "M. DURAND NATHAN",
)
URSSAF_REGIONS: tuple[str, ...] = (
    "ILE-DE-FRANCE",
    "AUVERGNE-RHONE-ALPES",
    "PROVENCE-ALPES-COTE D AZUR",
    "OCCITANIE",
    "BRETAGNE",
)
MONTHS_FR: tuple[str, ...] = (
    "JANVIER",
    "FEVRIER",
    "MARS",
    "AVRIL",
    "MAI",
    "JUIN",
    "JUILLET",
    "AOUT",
    "SEPTEMBRE",
    "OCTOBRE",
    "NOVEMBRE",
    "DECEMBRE",
)
# Each bank words incoming transfers its own way; index by bank.
_INCOMING_FORMATS: tuple[str, ...] = (
    "VIR SEPA {name} FACT {ref}",
    "VIR SEPA RECU /DE {name} /MOTIF {ref} /REF {bref}",
    "VIREMENT DE {name} REGLEMENT FACTURE {ref}",
)
# The same, when the customer quoted nothing.
_INCOMING_FORMATS_NO_REF: tuple[str, ...] = (
    "VIR SEPA {name}",
    "VIR SEPA RECU /DE {name} /REF {bref}",
    "VIREMENT DE {name}",
)
#: Of every 100 customer transfers, how many quote no invoice number, and how many quote one
#: with a typo (two digits swapped): what matching meets at real customers. Chosen from the
#: bank reference's digits, not the random stream, so amounts and dates stay as they were.
NO_REFERENCE_PER_100 = 5
TYPO_PER_100 = 3


def money(value: float | Decimal) -> Decimal:
    """Round to cents, half up, as banks do."""
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def _at(day: date, hour: int = BOOKING_HOUR, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=timezone.utc)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class IncidentSpec:
    """What scripted data incidents to add, anchored at the connection instant."""

    pending_booked_same_id: bool = False
    pending_booked_new_id: bool = False
    deleted_operation: bool = False
    label_change: bool = False
    late_backdated: bool = False
    #: Not an incident: a US dollar current account under the same IBAN as the euro one.
    multi_currency: bool = False


class _Generator:
    """Builds the four accounts of one connection day by day (one instance per generation)."""

    def __init__(
        self,
        *,
        key: str,
        seed: int,
        bank: SandboxBank,
        id_prefix: str,
        tx_prefix: str,
        connected_at: datetime,
        until: date,
    ) -> None:
        # The demo data needs reproducibility, not unpredictability.
        self.rng = random.Random(f"{seed}|{key}")  # noqa: S311
        self.bank = bank
        self.id_prefix = id_prefix
        self.tx_prefix = tx_prefix
        self.connected_at = connected_at
        self.day0 = connected_at.date()
        self.start = self.day0 - timedelta(days=HISTORY_DAYS)
        self.until = until
        self.size = self.rng.uniform(0.7, 1.5)
        self.ops: dict[AccountType, list[SandboxOperation]] = {t: [] for t in _KINDS}
        self.seq: dict[tuple[AccountType, date], int] = {}
        self.ref_counter = 0
        self.invoice_counters: dict[int, int] = {}
        self.holidays: dict[int, frozenset[date]] = {}
        self.due_days: dict[tuple[int, int, int], date] = {}
        self.working_days: dict[date, bool] = {}
        self.stamps: dict[date, str] = {}
        self.ibans: dict[str, str] = {}
        # Running figures that later operations depend on (VAT, URSSAF, card settlement).
        self.checking_balance = Decimal(0)
        self.savings_balance = Decimal(0)
        self.revenue: dict[tuple[int, int], Decimal] = {}
        self.purchases: dict[tuple[int, int], Decimal] = {}
        self.salaries: dict[tuple[int, int], Decimal] = {}
        self.card_spent: dict[tuple[int, int], Decimal] = {}
        self.loan_remaining = Decimal(0)
        letter = fold(bank.name)[:1].upper() or "X"
        self.card_number = f"4970{_digits('card' + key, 8)}{_digits('cardend' + key, 4)}"
        self.loan_number = f"{letter}{_digits('loan' + key, 9)}"
        self.employees = EMPLOYEES[: self.rng.randint(3, len(EMPLOYEES))]
        self.net_salaries = [money(self.rng.uniform(1650, 3400)) for _ in self.employees]
        self.urssaf_region = self.rng.choice(URSSAF_REGIONS)
        self.incoming_format = _INCOMING_FORMATS[int(_digits(bank.bic, 3)) % 3]
        self.rent = money(round(self.rng.uniform(1200, 3200) * self.size, -1))
        self.landlord = self.rng.choice(("SCI DES LILAS", "SCI LE MAIL", "FONCIERE DU CENTRE"))
        self.loan_rate = Decimal(str(round(self.rng.uniform(0.012, 0.045), 4)))
        self.loan_instalment = money(round(self.rng.uniform(900, 2200) * self.size, -1))
        self.loan_insurance = money(self.rng.uniform(8, 25))
        self.is_instalment = money(round(self.rng.uniform(1200, 5000) * self.size, -1))
        self.siren = _digits("siren" + key, 9)
        self.usd: _DollarAccount | None = None
        self.checking_iban = _own_iban(bank, key, "chk")
        self.savings_iban = _own_iban(bank, key, "sav")
        self.openings: dict[AccountType, Decimal] = {}
        # Sales must pay for the payroll with its charges, the VAT they carry, rent, suppliers
        # and the loan: size invoices so that 1.5 payments a working day do.
        monthly_sales = float(sum(self.net_salaries)) * 2.3 + 12000 * self.size
        mean_untaxed = monthly_sales / 21 / 1.5 / 1.2
        self.invoice_mu = math.log(mean_untaxed) - 0.8**2 / 2
        self.low_water = Decimal(8000) * Decimal(str(round(self.size, 2)))
        self.high_water = Decimal(55000) * Decimal(str(round(self.size, 2)))

    # -- helpers ------------------------------------------------------------------------------

    def holiday_set(self, year: int) -> frozenset[date]:
        if year not in self.holidays:
            self.holidays[year] = french_holidays(year)
        return self.holidays[year]

    def working(self, day: date) -> bool:
        if day not in self.working_days:
            self.working_days[day] = is_working_day(day, self.holiday_set(day.year))
        return self.working_days[day]

    def stamp(self, day: date) -> str:
        """``YYYYMMDD`` of ``day`` (memoised: strftime is slow and runs for every operation)."""
        if day not in self.stamps:
            self.stamps[day] = day.strftime("%Y%m%d")
        return self.stamps[day]

    def next_working(self, day: date) -> date:
        while not self.working(day):
            day += timedelta(days=1)
        return day

    def account_id(self, kind: AccountType) -> str:
        return f"{self.id_prefix}-{kind.value}"

    def new_id(self, kind: AccountType, day: date) -> str:
        count = self.seq.get((kind, day), 0) + 1
        self.seq[(kind, day)] = count
        return f"{self.tx_prefix}-{kind.value[0].upper()}{self.stamp(day)}-{count:03d}"

    def bank_ref(self, day: date) -> str:
        self.ref_counter += 1
        return f"{self.bank.bic[:4]}{self.stamp(day)[2:]}{self.ref_counter:07d}"

    def transaction(
        self,
        kind: AccountType,
        day: date,
        amount: Decimal,
        label: str,
        operation_type: str,
        **fields: object,
    ) -> Transaction:
        raw = {"sandbox_kind": operation_type, "label": label, "amount": str(amount)}
        remote_id = fields.pop("remote_id", None) or self.new_id(kind, day)
        values: dict[str, object] = {
            "remote_id": remote_id,
            "account_id": self.account_id(kind),
            "booking_date": day,
            "amount": amount,
            "currency": CURRENCY,
            "label": label,
            "value_date": day,
            "transaction_date": day,
            "bank_reference": self.bank_ref(day),
            "operation_type": operation_type,
            "updated_at": _at(day),
        }
        values.update(fields)
        return Transaction(raw=raw, **values)  # type: ignore[arg-type]

    def book(
        self, kind: AccountType, tx: Transaction, pending_since: datetime | None = None
    ) -> None:
        """Record an operation; with ``pending_since``, it is pending from then until booked."""
        versions: tuple[Transaction, ...] = (tx,)
        if pending_since is not None:
            pending = replace(
                tx,
                status=TransactionStatus.PENDING,
                value_date=None,
                bank_reference=None,
                updated_at=pending_since,
                raw={**tx.raw, "pending": True},
            )
            versions = (pending, tx)
        self.ops[kind].append(SandboxOperation(versions))
        if kind is AccountType.CHECKING:
            self.checking_balance += tx.amount
        elif kind is AccountType.SAVINGS:
            self.savings_balance += tx.amount

    # -- one day ------------------------------------------------------------------------------

    def generate(self) -> None:
        rng = self.rng
        self.checking_balance = money(rng.uniform(20000, 45000) * self.size)
        self.savings_balance = money(rng.uniform(10000, 40000) * self.size)
        self.loan_remaining = money(round(rng.uniform(60000, 120000) * self.size, -2))
        self.openings = {
            AccountType.CHECKING: self.checking_balance,
            AccountType.SAVINGS: self.savings_balance,
            AccountType.CARD: Decimal("0.00"),
            AccountType.LOAN: -self.loan_remaining,
        }
        day = self.start
        while day <= self.until:
            if self.working(day):
                self.daily(day)
            self.monthly(day)
            self.card_purchases(day)
            if self.usd is not None:
                self.usd.day(day)
            day += timedelta(days=1)

    def daily(self, day: date) -> None:
        rng = self.rng
        month = (day.year, day.month)
        checking = AccountType.CHECKING
        # Customers pay more often when cash runs low: a crude stand-in for a business that
        # chases its receivables, which keeps two years of random draws within sane balances.
        if self.checking_balance < self.low_water:
            weights = (0.05, 0.2, 0.35, 0.4)
        elif self.checking_balance > self.high_water:
            weights = (0.4, 0.35, 0.2, 0.05)
        else:
            weights = (0.2, 0.3, 0.3, 0.2)
        for _ in range(rng.choices((0, 1, 2, 3), weights)[0]):
            self.customer_transfer(day)
        if rng.random() < 0.5:
            merchant, low, high = rng.choice(MERCHANTS)
            amount = -money(rng.uniform(low, high) * self.size)
            tx = self.transaction(
                checking,
                day,
                amount,
                f"CB {merchant} {day:%d/%m}",
                "card",
                counterparty_name=merchant,
                value_date=self.next_working(day + timedelta(days=1)),
                # Immediate-debit card payments are booked the next working day.
                updated_at=_at(self.next_working(day + timedelta(days=1))),
            )
            self.book(checking, tx, pending_since=_at(day, rng.randint(9, 19), rng.randint(0, 59)))
            self.purchases[month] = self.purchases.get(month, Decimal(0)) - amount
        if rng.random() < 0.35:
            supplier = rng.choice(SUPPLIERS)
            amount = -money(rng.lognormvariate(6.6, 0.7) * self.size)
            ref = f"F{day.year}-{rng.randint(100, 9999):04d}"
            tx = self.transaction(
                checking,
                day,
                amount,
                f"VIR SEPA EMIS {supplier} FACT {ref}",
                "transfer",
                counterparty_name=supplier,
                counterparty_account=self.iban_of(supplier),
            )
            # What it pays: the supplier's invoice (its number and amount), as for customers.
            paid = [{"number": ref, "amount": str(-amount)}]
            self.book(checking, replace(tx, raw={**tx.raw, "pays": paid}))
            self.purchases[month] = self.purchases.get(month, Decimal(0)) - amount
        if rng.random() < 0.08:
            count = rng.randint(1, 4)
            amount = money(sum(rng.uniform(40, 900) for _ in range(count)) * self.size)
            number = _digits(f"remise{day}{self.tx_prefix}", 7)
            tx = self.transaction(
                checking,
                day,
                amount,
                f"REMISE CHEQUES N {number} {count} CHQ",
                "check",
                value_date=self.next_working(day + timedelta(days=1)),
            )
            self.book(checking, tx)
            self.revenue[month] = self.revenue.get(month, Decimal(0)) + amount
        if rng.random() < 0.04:
            number = _digits(f"cheque{day}{self.tx_prefix}", 7)
            amount = -money(rng.uniform(50, 1500) * self.size)
            self.book(
                checking,
                self.transaction(checking, day, amount, f"CHEQUE N {number}", "check"),
            )

    def customer_transfer(self, day: date) -> None:
        rng = self.rng
        name, country = rng.choice(CUSTOMERS)
        invoices, issue_dates, amounts = [], [], []
        for _ in range(1 if rng.random() < 0.85 else 2):
            issued = day - timedelta(days=rng.randint(10, 60))
            number = self.invoice_counters.get(issued.year, 0) + 1
            self.invoice_counters[issued.year] = number
            invoices.append(f"INV/{issued.year}/{number:05d}")
            issue_dates.append(issued)
            untaxed = rng.lognormvariate(self.invoice_mu, 0.8)
            amounts.append(money(money(untaxed) * Decimal("1.2")))
        total = sum(amounts, Decimal(0))
        bref = self.bank_ref(day)
        # What the transfer really pays (the invoices, their dates and amounts), in ``raw``:
        # the demo and the benchmarks book these invoices and judge matching against them.
        paid = [
            {"number": number, "date": issued.isoformat(), "amount": str(amount)}
            for number, issued, amount in zip(invoices, issue_dates, amounts, strict=True)
        ]
        variant = int(_digits("quote" + bref, 2))
        quoted = [entry["number"] for entry in paid]
        if variant < NO_REFERENCE_PER_100:
            fmt = _INCOMING_FORMATS_NO_REF[_INCOMING_FORMATS.index(self.incoming_format)]
            label = fmt.format(name=name, bref=bref[-8:])
        else:
            if variant < NO_REFERENCE_PER_100 + TYPO_PER_100:
                quoted[0] = swap_digits(quoted[0])
            label = self.incoming_format.format(name=name, ref=" ".join(quoted), bref=bref[-8:])
        tx = self.transaction(
            AccountType.CHECKING,
            day,
            total,
            label,
            "transfer",
            counterparty_name=name,
            counterparty_account=self.iban_of(name, country),
            bank_reference=bref,
        )
        self.book(AccountType.CHECKING, replace(tx, raw={**tx.raw, "pays": paid}))
        month = (day.year, day.month)
        self.revenue[month] = self.revenue.get(month, Decimal(0)) + total

    def card_purchases(self, day: date) -> None:
        """Payments with the deferred-debit card: pending when made, booked two days later."""
        rng = self.rng
        card = AccountType.CARD
        month = (day.year, day.month)
        count = rng.choices((0, 1, 2), (0.35, 0.45, 0.2))[0] if self.working(day) else 0
        if day.day == 3:
            # A monthly cloud bill paid in dollars: exercises foreign amounts.
            usd = money(rng.uniform(40, 160) * self.size)
            rate = Decimal(str(round(rng.uniform(1.05, 1.12), 4)))
            amount = -money(usd / rate)
            tx = self.transaction(
                card,
                day,
                amount,
                f"CB AWS EMEA {day:%d/%m} USD {usd}",
                "card",
                counterparty_name="AMAZON WEB SERVICES",
                foreign_amount=-usd,
                foreign_currency="USD",
                updated_at=_at(day + timedelta(days=2)),
            )
            self.book(card, tx, pending_since=_at(day, 3, 15))
            self.card_spent[month] = self.card_spent.get(month, Decimal(0)) - amount
        for _ in range(count):
            merchant, low, high = rng.choice(MERCHANTS)
            amount = -money(rng.uniform(low, high) * self.size)
            tx = self.transaction(
                card,
                day,
                amount,
                f"CB {merchant} {day:%d/%m}",
                "card",
                counterparty_name=merchant,
                updated_at=_at(day + timedelta(days=2)),
            )
            self.book(card, tx, pending_since=_at(day, rng.randint(9, 19), rng.randint(0, 59)))
            self.card_spent[month] = self.card_spent.get(month, Decimal(0)) - amount

    # -- monthly ------------------------------------------------------------------------------

    def on(self, day: date, target_day: int) -> bool:
        """True on the first working day on or after ``target_day`` of the month."""
        key = (day.year, day.month, target_day)
        if key not in self.due_days:
            self.due_days[key] = self.next_working(date(day.year, day.month, min(target_day, 28)))
        return self.due_days[key] == day

    def iban_of(self, name: str, country: str = "FR") -> str:
        """The counterparty's IBAN (memoised: the same few names come back every day)."""
        if name not in self.ibans:
            self.ibans[name] = counterparty_iban(name, country)
        return self.ibans[name]

    def monthly(self, day: date) -> None:
        if not self.working(day):
            return
        rng = self.rng
        checking = AccountType.CHECKING
        previous = _add_months(day, -1)
        prev_key = (previous.year, previous.month)
        if self.on(day, 1):
            amount = -money(25 + 4 * rng.random())
            self.book(
                checking,
                self.transaction(checking, day, amount, "COTISATION OFFRE PRO", "bank_fee"),
            )
        for creditor, dom, base, spread, detail in DIRECT_DEBITS:
            if self.on(day, dom):
                amount = -money(base * self.size * (1 + rng.uniform(-spread, spread)))
                rum = f"RUM{_digits(creditor + self.tx_prefix, 10)}"
                tx = self.transaction(
                    checking,
                    day,
                    amount,
                    f"PRLV SEPA {creditor} {detail} {rum}",
                    "direct_debit",
                    counterparty_name=creditor,
                )
                self.book(checking, tx)
                month = (day.year, day.month)
                self.purchases[month] = self.purchases.get(month, Decimal(0)) - amount
        if self.on(day, 4):
            label = f"VIR SEPA EMIS {self.landlord} LOYER {MONTHS_FR[day.month - 1]} {day.year}"
            tx = self.transaction(
                checking,
                day,
                -self.rent,
                label,
                "transfer",
                counterparty_name=self.landlord,
                counterparty_account=self.iban_of(self.landlord),
            )
            self.book(checking, tx)
        if self.on(day, 5) and self.card_spent.get(prev_key):
            self.card_settlement(day, prev_key)
        if self.on(day, 10):
            self.loan_payment(day)
        self.monthly_taxes(day, prev_key, previous)
        if self.on(day, 25):
            self.savings_sweep(day)
        last = _add_months(day, 1) - timedelta(days=1)
        while not self.working(last):
            last -= timedelta(days=1)
        if day == last:
            self.pay_salaries(day)
            if day.month == 12:
                self.savings_interest(day)

    def monthly_taxes(self, day: date, prev_key: tuple[int, int], previous: date) -> None:
        """URSSAF on the 15th, corporate tax quarterly, CFE in December, VAT on the 19th."""
        rng = self.rng
        checking = AccountType.CHECKING
        if self.on(day, 15):
            salaries = self.salaries.get(prev_key)
            if salaries:
                amount = -money(salaries * Decimal("0.82"))
                label = f"PRLV SEPA URSSAF {self.urssaf_region} COTISATIONS {previous:%m/%Y}"
                tx = self.transaction(
                    checking,
                    day,
                    amount,
                    label,
                    "direct_debit",
                    counterparty_name=f"URSSAF {self.urssaf_region}",
                )
                self.book(checking, tx)
            if day.month in (3, 6, 9, 12):
                quarter = day.month // 3
                label = f"PRLV SEPA DGFIP IS ACOMPTE {day.year}-{quarter} SIREN {self.siren}"
                tx = self.transaction(
                    checking,
                    day,
                    -self.is_instalment,
                    label,
                    "direct_debit",
                    counterparty_name="DGFIP",
                )
                self.book(checking, tx)
            if day.month == 12:
                label = f"PRLV SEPA DGFIP CFE {day.year} SIREN {self.siren}"
                amount = -money(rng.uniform(500, 1200))
                tx = self.transaction(
                    checking, day, amount, label, "direct_debit", counterparty_name="DGFIP"
                )
                self.book(checking, tx)
        if self.on(day, 19):
            self.vat_payment(day, prev_key, previous)

    def card_settlement(self, day: date, month: tuple[int, int]) -> None:
        total = self.card_spent.pop(month)
        period = f"{month[1]:02d}/{month[0]}"
        card_label = f"REGLEMENT RELEVE CARTE {period}"
        self.book(
            AccountType.CARD,
            self.transaction(AccountType.CARD, day, total, card_label, "card_summary"),
        )
        label = f"RELEVE CARTE DIFFERE {period} CB*{self.card_number[-4:]}"
        tx = self.transaction(AccountType.CHECKING, day, -total, label, "card_summary")
        self.book(AccountType.CHECKING, tx)

    def loan_payment(self, day: date) -> None:
        if self.loan_remaining <= 0:
            return
        interest = money(self.loan_remaining * self.loan_rate / 12)
        principal = min(self.loan_instalment - interest, self.loan_remaining)
        self.loan_remaining -= principal
        raw_detail = {
            "principal": str(principal),
            "interest": str(interest),
            "insurance": str(self.loan_insurance),
        }
        label = f"ECHEANCE PRET N {self.loan_number} DU {day:%d/%m/%y}"
        total = principal + interest + self.loan_insurance
        tx = self.transaction(AccountType.CHECKING, day, -total, label, "loan_repayment")
        self.book(AccountType.CHECKING, replace(tx, raw={**tx.raw, **raw_detail}))
        loan_label = f"REMBOURSEMENT CAPITAL ECHEANCE {day:%m/%Y}"
        loan_tx = self.transaction(AccountType.LOAN, day, principal, loan_label, "loan_repayment")
        self.book(AccountType.LOAN, replace(loan_tx, raw={**loan_tx.raw, **raw_detail}))

    def vat_payment(self, day: date, month: tuple[int, int], previous: date) -> None:
        collected = self.revenue.get(month, Decimal(0)) * Decimal(20) / Decimal(120)
        deductible = self.purchases.get(month, Decimal(0)) * Decimal(20) / Decimal(120)
        due = (collected - deductible * Decimal("0.8")).quantize(Decimal(1))
        if due <= 0:
            return  # a VAT credit: nothing to pay this month
        label = f"PRLV SEPA DGFIP TVA CA3 {previous:%m/%Y} SIREN {self.siren}"
        tx = self.transaction(
            AccountType.CHECKING,
            day,
            -money(due),
            label,
            "direct_debit",
            counterparty_name="DGFIP",
        )
        self.book(AccountType.CHECKING, tx)

    def pay_salaries(self, day: date) -> None:
        month_name = f"{MONTHS_FR[day.month - 1]} {day.year}"
        total = Decimal(0)
        for employee, net in zip(self.employees, self.net_salaries, strict=True):
            amount = money(net * Decimal("1.5")) if day.month == 12 else net
            tx = self.transaction(
                AccountType.CHECKING,
                day,
                -amount,
                f"VIR SEPA SALAIRE {month_name} {employee}",
                "transfer",
                counterparty_name=employee,
                counterparty_account=self.iban_of(employee),
            )
            self.book(AccountType.CHECKING, tx)
            total += amount
        self.salaries[(day.year, day.month)] = total

    def savings_sweep(self, day: date) -> None:
        """Keep the current account within a sensible range by moving money to/from savings."""
        high, low = self.high_water, self.low_water
        amount = Decimal(0)
        if self.checking_balance > high:
            amount = ((self.checking_balance - high * Decimal("0.6")) / 1000).quantize(
                Decimal(1)
            ) * 1000
        elif self.checking_balance < low:
            amount = -min(Decimal(15000), self.savings_balance.quantize(Decimal(1), ROUND_DOWN))
        if not amount:
            return
        savings_iban = self.savings_iban
        if amount > 0:
            out_label, in_label = "VIR SEPA EMIS VERS LIVRET PRO", "VIR SEPA RECU DU COMPTE COURANT"
        else:
            out_label, in_label = "VIR SEPA RECU DU LIVRET PRO", "VIR SEPA EMIS VERS COMPTE COURANT"
        self.book(
            AccountType.CHECKING,
            self.transaction(
                AccountType.CHECKING,
                day,
                -money(amount),
                out_label,
                "transfer",
                counterparty_account=savings_iban,
            ),
        )
        self.book(
            AccountType.SAVINGS,
            self.transaction(
                AccountType.SAVINGS,
                day,
                money(amount),
                in_label,
                "transfer",
                counterparty_account=self.checking_iban,
            ),
        )

    def savings_interest(self, day: date) -> None:
        interest = money(self.savings_balance * Decimal("0.015"))
        if interest > 0:
            label = f"INTERETS CREDITEURS {day.year}"
            tx = self.transaction(AccountType.SAVINGS, day, interest, label, "interest")
            self.book(AccountType.SAVINGS, tx)


class _DollarAccount:
    """A US dollar current account sharing the euro account's IBAN (one IBAN, two currencies,
    as French banks offer): American customers pay in dollars, and each month the surplus is
    converted into euros on the euro account."""

    suffix = "usd"

    def __init__(self, gen: _Generator, key: str, seed: int) -> None:
        self.gen = gen
        # Its own random stream: adding dollars leaves the euro data as it was.
        self.rng = random.Random(f"{seed}|{key}|usd")  # noqa: S311
        self.account_id = f"{gen.id_prefix}-{self.suffix}"
        self.opening = money(self.rng.uniform(5000, 15000))
        self.balance = self.opening
        self.ops: list[SandboxOperation] = []
        self.seq: dict[date, int] = {}

    def book(self, day: date, amount: Decimal, label: str, op_type: str, **fields: object) -> None:
        count = self.seq.get(day, 0) + 1
        self.seq[day] = count
        tx = self.gen.transaction(
            AccountType.CHECKING,
            day,
            amount,
            label,
            op_type,
            remote_id=f"{self.gen.tx_prefix}-U{self.gen.stamp(day)}-{count:03d}",
            account_id=self.account_id,
            currency="USD",
            **fields,
        )
        self.ops.append(SandboxOperation((tx,)))
        self.balance += amount

    def day(self, day: date) -> None:
        gen, rng = self.gen, self.rng
        if not gen.working(day):
            return
        if rng.random() < 0.12:
            customer = rng.choice(("ACME CORP", "BLUE RIVER INC", "PACIFIC TRADING LLC"))
            number = f"INV/{day.year}/U{rng.randint(1, 999):03d}"
            amount = money(rng.uniform(800, 9000))
            label = f"VIR SWIFT RECU {customer} {number}"
            self.book(day, amount, label, "transfer", counterparty_name=customer)
        if gen.on(day, 28):
            self.book(day, Decimal("-15.00"), "FRAIS TENUE DE COMPTE DEVISE", "bank_fee")
            if self.balance > 5000:
                amount = ((self.balance - 3000) / 1000).quantize(Decimal(1), ROUND_DOWN) * 1000
                rate = Decimal(str(round(rng.uniform(1.05, 1.12), 4)))
                label = f"CHANGE USD/EUR {amount} USD TAUX {rate}"
                self.book(day, -money(amount), label, "transfer")
                euros = money(amount / rate)
                tx = gen.transaction(
                    AccountType.CHECKING,
                    day,
                    euros,
                    label,
                    "transfer",
                    foreign_amount=money(amount),
                    foreign_currency="USD",
                )
                gen.book(AccountType.CHECKING, tx)

    def data(self) -> SandboxAccountData:
        """The generated account."""
        gen = self.gen
        return SandboxAccountData(
            kind=AccountType.CHECKING,
            remote_id=self.account_id,
            label="Compte courant professionnel USD",
            masked_number=mask(gen.checking_iban[4:]),
            iban=gen.checking_iban,
            opening_balance=self.opening,
            history_start=gen.start,
            operations=tuple(self.ops),
            currency="USD",
        )


_KINDS = (AccountType.CHECKING, AccountType.SAVINGS, AccountType.CARD, AccountType.LOAN)


def generate_accounts(
    *,
    key: str,
    seed: int,
    bank: SandboxBank,
    id_prefix: str,
    tx_prefix: str,
    connected_at: datetime,
    until: date,
    incidents: IncidentSpec,
) -> dict[str, SandboxAccountData]:
    """Generate the accounts of one connection, with operations booked up to ``until``.

    Four accounts keyed by their id suffix (``checking``, ``savings``, ``card``, ``loan``), plus
    ``usd`` with ``incidents.multi_currency``. ``key`` identifies the connection (with
    ``seed``, it seeds the random stream); account ids are ``<id_prefix>-<suffix>`` and
    operation ids start with ``tx_prefix``. Operations dated after ``until`` are not
    generated; scripted incidents anchored at ``connected_at`` always are.
    """
    gen = _Generator(
        key=key,
        seed=seed,
        bank=bank,
        id_prefix=id_prefix,
        tx_prefix=tx_prefix,
        connected_at=connected_at,
        until=until,
    )
    checking_iban, savings_iban = gen.checking_iban, gen.savings_iban
    if incidents.multi_currency:
        gen.usd = _DollarAccount(gen, key, seed)
    gen.generate()
    _add_incidents(gen, incidents)
    labels = {
        AccountType.CHECKING: (
            "Compte courant professionnel",
            mask(checking_iban[4:]),
            checking_iban,
        ),
        AccountType.SAVINGS: ("Compte sur livret pro", mask(savings_iban[4:]), savings_iban),
        AccountType.CARD: (
            "Carte Business débit différé",
            f"{gen.card_number[:4]} **** **** {gen.card_number[-4:]}",
            None,
        ),
        AccountType.LOAN: ("Prêt professionnel équipement", mask(gen.loan_number), None),
    }
    result: dict[str, SandboxAccountData] = {}
    for kind in _KINDS:
        label, masked, iban = labels[kind]
        operations = sorted(
            gen.ops[kind], key=lambda op: (op.versions[-1].booking_date, op.remote_id)
        )
        result[kind.value] = SandboxAccountData(
            kind=kind,
            remote_id=gen.account_id(kind),
            label=label,
            masked_number=masked,
            iban=iban,
            opening_balance=gen.openings[kind],
            history_start=gen.start,
            operations=tuple(operations),
        )
    if gen.usd is not None:
        result[gen.usd.suffix] = gen.usd.data()
    return result


def _own_iban(bank: SandboxBank, key: str, account: str) -> str:
    """The IBAN of one of the connection's own accounts, at its bank."""
    if bank.country == "FR":
        branch = _digits("branch" + key, 5)
        return french_iban(bank.bank_code, branch, _digits(account + key, 11))
    return _foreign_iban(bank, account + key)


def _foreign_iban(bank: SandboxBank, key: str) -> str:
    if bank.country == "BE":
        return counterparty_iban(key, "BE")
    if bank.country == "DE":
        bban = bank.bank_code + _digits(key, 10)
        return "DE" + iban_check_digits("DE", bban) + bban
    # Spain: bank (4) + branch (4) + 2 national check digits (left as computed filler) + 10.
    bban = bank.bank_code + _digits("b" + key, 4) + _digits("k" + key, 2) + _digits(key, 10)
    return bank.country + iban_check_digits(bank.country, bban) + bban


def _add_incidents(gen: _Generator, spec: IncidentSpec) -> None:
    """Scripted operations whose versions change after the connection (see the provider doc)."""
    day0 = gen.day0
    checking = AccountType.CHECKING
    before_connect = gen.connected_at - timedelta(hours=1)

    def incident_id(day: date, number: int) -> str:
        return f"{gen.tx_prefix}-C{day:%Y%m%d}-{900 + number:03d}"

    def base(day: date, number: int, amount: str, label: str, op_type: str) -> Transaction:
        return Transaction(
            remote_id=incident_id(day, number),
            account_id=gen.account_id(checking),
            booking_date=day,
            amount=Decimal(amount),
            currency=CURRENCY,
            label=label,
            value_date=day,
            transaction_date=day,
            bank_reference=f"{gen.bank.bic[:4]}{day:%y%m%d}INC{number:04d}",
            operation_type=op_type,
            updated_at=before_connect,
            raw={"sandbox_incident": number, "label": label, "amount": amount},
        )

    ops = gen.ops[checking]
    booked_day = day0 + timedelta(days=2)
    if spec.pending_booked_same_id:
        booked = replace(
            base(day0, 1, "-89.90", f"CB AMAZON MKTP {day0:%d/%m}", "card"),
            booking_date=booked_day,
            value_date=booked_day,
            counterparty_name="AMAZON EU SARL",
            updated_at=_at(booked_day),
        )
        pending = replace(
            booked,
            booking_date=day0,
            value_date=None,
            bank_reference=None,
            status=TransactionStatus.PENDING,
            updated_at=before_connect,
        )
        ops.append(SandboxOperation((pending, booked)))
    if spec.pending_booked_new_id:
        pending = replace(
            base(day0, 2, "-142.50", f"CB TOTALENERGIES {day0:%d/%m}", "card"),
            status=TransactionStatus.PENDING,
            value_date=None,
            bank_reference=None,
            counterparty_name="TOTALENERGIES",
        )
        gone = replace(pending, deleted=True, updated_at=_at(booked_day))
        ops.append(SandboxOperation((pending, gone)))
        booked = replace(
            base(booked_day, 3, "-142.50", f"CB TOTALENERGIES {day0:%d/%m}", "card"),
            transaction_date=day0,
            counterparty_name="TOTALENERGIES",
            updated_at=_at(booked_day),
        )
        ops.append(SandboxOperation((booked,)))
    if spec.deleted_operation:
        day = day0 - timedelta(days=1)
        shown = base(day, 4, "-310.00", "VIR SEPA EMIS TRANSPORTS GIRAUD FACT F-ERREUR", "transfer")
        gone = replace(shown, deleted=True, updated_at=_at(day0 + timedelta(days=1)))
        ops.append(SandboxOperation((shown, gone)))
    if spec.label_change:
        day = day0 - timedelta(days=1)
        first = base(day, 5, "-23.40", "PAIEMENT CB 4970 PHARMACIE", "card")
        renamed = replace(
            first,
            label=f"CB PHARMACIE DU CENTRE {day:%d/%m}",
            counterparty_name="PHARMACIE DU CENTRE",
            updated_at=_at(day0 + timedelta(days=1)),
        )
        ops.append(SandboxOperation((first, renamed)))
    if spec.late_backdated:
        day = day0 - timedelta(days=5)
        late = replace(
            base(day, 6, "1250.00", "REMISE CHEQUES N 8812345 2 CHQ", "check"),
            updated_at=_at(day0 + timedelta(days=1)),
        )
        ops.append(SandboxOperation((late,)))


def visible_operations(
    operations: Iterable[SandboxOperation], instant: datetime
) -> list[Transaction]:
    """The versions visible at ``instant`` (deleted and pending ones included, flagged)."""
    out = []
    for operation in operations:
        version = version_at(operation, instant)
        if version is not None:
            out.append(version)
    return out


def booked_total(transactions: Sequence[Transaction]) -> Decimal:
    """Sum of the booked, not deleted operations: what the balance moved by."""
    return sum(
        (t.amount for t in transactions if not t.deleted and not t.is_pending), Decimal("0.00")
    )

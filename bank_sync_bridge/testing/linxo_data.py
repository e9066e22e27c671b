"""Deterministic data for the Linxo Connect emulator: banks, accounts and operations.

Everything here is generated from a seed with :class:`random.Random`, so that two emulators
started with the same seed serve byte-identical data (tests, demo and benchmarks agree), and
large data sets (tens of thousands of operations) are produced in a fraction of a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from ..iban import iban

#: Linxo publishes provider logos under this path (seen in a v2.1 fixture,
#: docs/aggregators.md §2.4).
LOGO_URL = "https://static.oxlin.io/common/pictures/providers_logos/{id}.png"


@dataclass(frozen=True)
class ProviderSeed:
    """One bank of the emulator's catalogue (Linxo "provider")."""

    id: str
    name: str
    country: str
    group: str | None = None


#: The emulator's bank catalogue, most requested first (the order Linxo's list is assumed to
#: use; the real ordering is not documented). Ids look like Linxo's (short numeric strings).
PROVIDERS: tuple[ProviderSeed, ...] = (
    ProviderSeed("1022", "Crédit Agricole - Languedoc", "FR", "Crédit Agricole"),
    ProviderSeed("1001", "BNP Paribas", "FR", "BNP Paribas"),
    ProviderSeed("1004", "Société Générale", "FR", "Société Générale"),
    ProviderSeed("1010", "Crédit Mutuel", "FR", "Crédit Mutuel Alliance Fédérale"),
    ProviderSeed("1012", "Caisse d'Épargne Île-de-France", "FR", "BPCE"),
    ProviderSeed("1013", "Banque Populaire Rives de Paris", "FR", "BPCE"),
    ProviderSeed("1030", "La Banque Postale", "FR"),
    ProviderSeed("1040", "LCL", "FR", "Crédit Agricole"),
    ProviderSeed("1050", "CIC", "FR", "Crédit Mutuel Alliance Fédérale"),
    ProviderSeed("1060", "Crédit Coopératif", "FR", "BPCE"),
    ProviderSeed("1070", "Qonto", "FR"),
    ProviderSeed("1080", "Shine", "FR"),
    ProviderSeed("1090", "Boursorama Banque", "FR", "Société Générale"),
    ProviderSeed("2001", "Belfius", "BE"),
    ProviderSeed("2002", "ING Belgique", "BE", "ING"),
    ProviderSeed("3001", "Deutsche Bank", "DE"),
    ProviderSeed("9999", "Linxo Test Bank", "FR"),
)

#: Counterparties and operation types that read like a small French business's statement.
_OPERATIONS: tuple[tuple[str, str, str, int, int], ...] = (
    # (clean label, raw bank text, Linxo type, min cents, max cents); sign from the type
    ("Orange", "PRLV SEPA ORANGE SA", "DIRECT_DEBIT", -15000, -2999),
    ("EDF", "PRLV SEPA EDF CLIENTS PRO", "DIRECT_DEBIT", -48000, -6000),
    ("URSSAF", "PRLV SEPA URSSAF ILE DE FRANCE", "DIRECT_DEBIT", -350000, -40000),
    ("Client Dupont SARL", "VIR SEPA RECU DUPONT SARL", "CREDIT", 12000, 480000),
    ("Client Martin & Fils", "VIR INST RECU MARTIN ET FILS", "CREDIT", 5000, 250000),
    ("Metro", "CB METRO CASH 75 PARIS", "POINT_OF_SALE", -60000, -1500),
    ("Total Energies", "CB TOTALENERGIES STATION", "POINT_OF_SALE", -12000, -2000),
    ("Loyer bureaux", "VIR SEPA EMIS SCI DES LILAS", "ELECTRONIC_PAYMENT", -180000, -90000),
    ("Frais bancaires", "COTISATION OFFRE PRO", "BANK_FEE", -3500, -900),
    ("Remise chèques", "REMISE CHEQUES N 4471", "DEPOSIT", 10000, 150000),
    ("Retrait DAB", "RETRAIT DAB 12/03 PARIS", "ATM", -40000, -2000),
    ("OVH", "CB OVH SAS ROUBAIX", "POINT_OF_SALE", -9000, -500),
)


def cents_to_decimal(cents: int) -> Decimal:
    """Exact decimal amount from integer minor units (never through float)."""
    return Decimal(cents).scaleb(-2)


@dataclass(frozen=True)
class GeneratedOperation:
    """One generated bank operation, before the emulator assigns its id."""

    booking_date: date
    value_date: date
    amount: Decimal
    label: str
    notes: str
    type: str


def generate_operations(
    seed: int | str, count: int, *, start: date, end: date
) -> list[GeneratedOperation]:
    """``count`` operations spread over ``[start, end]``, sorted by booking date.

    Deterministic for a given ``(seed, count, start, end)``. About 50,000 operations per
    0.3 s on a laptop, which keeps benchmarks' setup negligible.
    """
    rng = random.Random(f"linxo-ops:{seed}")
    span = max(0, (end - start).days)
    start_ordinal = start.toordinal()
    operations: list[GeneratedOperation] = []
    choices = _OPERATIONS
    for _ in range(count):
        label, notes, kind, low, high = choices[rng.randrange(len(choices))]
        day = date.fromordinal(start_ordinal + rng.randint(0, span))
        value_day = day - timedelta(days=rng.choice((0, 0, 0, 1, 2)))
        cents = rng.randint(low, high)
        operations.append(
            GeneratedOperation(
                booking_date=day,
                value_date=value_day,
                amount=cents_to_decimal(cents),
                label=label,
                notes=f"{notes}\nREF {rng.randrange(10**8):08d}",
                type=kind,
            )
        )
    operations.sort(key=lambda op: op.booking_date)
    return operations


def generate_iban(seed: int | str) -> str:
    """A French-looking IBAN with a valid ISO 13616 check (so IBAN validators accept it)."""
    rng = random.Random(f"linxo-iban:{seed}")
    return iban("FR", "".join(str(rng.randint(0, 9)) for _ in range(23)))


__all__ = [
    "LOGO_URL",
    "PROVIDERS",
    "GeneratedOperation",
    "ProviderSeed",
    "cents_to_decimal",
    "generate_iban",
    "generate_operations",
]

"""IBAN arithmetic (ISO 13616) and French RIB keys, for realistic demo and test data.

One helper for the sandbox aggregator and the emulators alike, so that every generated account
number passes the checks a bank, Odoo or an accountant would run on it.
"""

from __future__ import annotations


def _numeric(text: str) -> str:
    """Letters as numbers (A=10 ... Z=35), as ISO 13616 wants for the mod-97 check."""
    return "".join(str(int(c, 36)) for c in text)


def iban_check_digits(country: str, bban: str) -> str:
    """The two ISO 13616 check digits for ``bban`` in ``country``."""
    remainder = int(_numeric(bban + country.upper() + "00")) % 97
    return f"{98 - remainder:02d}"


def iban(country: str, bban: str) -> str:
    """The IBAN of ``bban`` in ``country``: country code, check digits, BBAN."""
    return country.upper() + iban_check_digits(country, bban) + bban


def is_valid_iban(value: str) -> bool:
    """Whether ``value`` (spaces allowed) passes the ISO 13616 mod-97 check."""
    compact = value.replace(" ", "").upper()
    if len(compact) < 15 or not compact.isalnum() or not compact[:2].isalpha():
        return False
    return int(_numeric(compact[4:] + compact[:4])) % 97 == 1


def rib_key(bank_code: str, branch_code: str, account_number: str) -> str:
    """The French RIB key (clé RIB) of a digits-only account number."""
    total = 89 * int(bank_code) + 15 * int(branch_code) + 3 * int(account_number)
    return f"{97 - total % 97:02d}"


def french_iban(bank_code: str, branch_code: str, account_number: str) -> str:
    """A French IBAN with a valid RIB key and IBAN check digits; a short account number is
    zero-filled to its 11 digits."""
    if len(account_number) > 11:
        raise ValueError("A French account number has at most 11 characters")
    number = account_number.rjust(11, "0")
    return iban("FR", bank_code + branch_code + number + rib_key(bank_code, branch_code, number))


__all__ = ["french_iban", "iban", "iban_check_digits", "is_valid_iban", "rib_key"]

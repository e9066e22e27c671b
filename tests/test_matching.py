"""The matcher: exact and unique matches are applied, anything ambiguous is only suggested."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bank_sync_bridge.matching import (
    BankOperation,
    OpenItem,
    TextIndex,
    company_key,
    counterparty_key,
    match_operations,
    reference_forms,
)

ACME, DUPONT = 1, 2


def item(item_id, amount, *refs, partner=ACME, currency="EUR", kind="invoice"):
    return OpenItem(
        item_id, partner, Decimal(amount), currency, tuple(refs), kind, refs[0] if refs else ""
    )


def op(line_id, amount, *texts, partner=None, currency="EUR", partner_sure=True):
    return BankOperation(
        line_id, Decimal(amount), currency, tuple(texts), partner, partner_sure=partner_sure
    )


def decide(operations, items):
    return {d.line_id: d for d in match_operations(operations, items)}


@pytest.mark.parametrize(
    "text",
    [
        "VIR SEPA ACME SARL FACT INV/2026/00042",
        "virement acme inv-2026-042",
        "REGLEMENT FACTURE INV 2026 00042",
        "INV202600042",
        "/MOTIF INV/2026/00042/REF 123",
    ],
)
def test_a_reference_is_found_whatever_its_separators_case_and_zeros(text):
    assert TextIndex.of([text]).quotes("INV/2026/00042")


@pytest.mark.parametrize(
    "text",
    ["FACT INV/2026/00043", "INV/2026/000420", "INV/2025/00042", "FACT 42", "INV2026042X"],
)
def test_another_document_number_is_not_taken_for_it(text):
    assert not TextIndex.of([text]).quotes("INV/2026/00042")


def test_references_too_weak_to_identify_anything_are_ignored():
    assert reference_forms("42") is None
    assert reference_forms("ACME") is None
    assert reference_forms("F-12") is None  # three characters
    assert reference_forms("F-123") is not None


@pytest.mark.parametrize(
    ("reference", "text"),
    [
        ("0001", "VIR SEPA LOYER 01/03"),
        ("F-0012", "PEAGE A7 F 12 SORTIE"),  # F12: three characters once unpadded
        ("2026", "PRLV URSSAF 15/01/2026"),
        ("12/2026", "PAYE LE 15/12/2026"),
        ("1/2026", "ECHEANCE 01/01/2026"),
        ("00042", "CB PARKING 42"),
        ("2026/00042", "PAYE LE 15/12/2026 00042"),
    ],
)
def test_a_reference_of_few_digits_is_never_found_in_a_date_or_a_small_number(reference, text):
    """Leading zeros do not count towards a reference's length, and digits only are never
    looked for inside a date: a rent paid on 01/03 does not pay invoice 0001."""
    assert not TextIndex.of([text]).quotes(reference)
    decisions = decide([op(10, "50.00", text)], [item(1, "50.00", reference)])
    assert decisions[10].apply is None


@pytest.mark.parametrize(
    ("reference", "text"),
    [
        ("7788123", "REMISE CHQ 7788123"),
        ("2026/00042", "VIR CLIENT REF 2026/00042 DU 15/12/2026"),
        ("0012345", "VIR 15/12/2026 FACTURE 12345"),
    ],
)
def test_a_reference_of_enough_digits_is_found_beside_a_date(reference, text):
    assert TextIndex.of([text]).quotes(reference)


def test_the_quoted_invoice_of_the_right_amount_is_applied():
    decisions = decide(
        [op(10, "120.00", "VIR SEPA ACME FACT INV/2026/00042")],
        [item(1, "120.00", "INV/2026/00042"), item(2, "120.00", "INV/2026/00043")],
    )
    assert decisions[10].apply.item_ids == (1,)
    assert decisions[10].apply.rule == "reference"
    assert decisions[10].apply.quoted == ("INV/2026/00042",)


def test_two_invoices_of_one_partner_quoted_in_one_transfer_are_applied_together():
    decisions = decide(
        [op(10, "300.00", "VIREMENT DE ACME REGLEMENT FACTURE INV/2026/00042 INV/2026/00051")],
        [item(1, "120.00", "INV/2026/00042"), item(2, "180.00", "INV/2026/00051")],
    )
    assert decisions[10].apply.item_ids == (1, 2)
    assert decisions[10].apply.rule == "references_sum"


def test_a_partial_payment_is_only_suggested():
    decisions = decide(
        [op(10, "50.00", "FACT INV/2026/00042")], [item(1, "120.00", "INV/2026/00042")]
    )
    assert decisions[10].apply is None
    best = decisions[10].suggestions[0]
    assert (best.item_ids, best.rule, best.difference) == (
        (1,),
        "reference_partial",
        Decimal("70.00"),
    )


def test_a_quoted_invoice_completed_by_the_partners_other_invoice_comes_first():
    """The transfer pays two invoices, the second number mistyped: the quoted invoice with the
    partner's other open item that makes the total is the first suggestion, never applied."""
    decisions = decide(
        [op(10, "300.00", "VIR ACME FACT INV/2026/00042 INV/2026/00015")],
        [
            item(1, "120.00", "INV/2026/00042"),
            item(2, "180.00", "INV/2026/00051"),
            item(3, "95.00", "INV/2026/00060"),
        ],
    )
    assert decisions[10].apply is None
    best = decisions[10].suggestions[0]
    assert (best.item_ids, best.rule, best.difference) == ((1, 2), "reference_completed", 0)


def test_a_number_mistyped_into_another_customers_invoice_is_completed_all_the_same():
    decisions = decide(
        [op(10, "300.00", "VIR ACME FACT INV/2026/00042 INV/2026/00015")],
        [
            item(1, "120.00", "INV/2026/00042"),
            item(2, "180.00", "INV/2026/00051"),
            item(3, "95.00", "INV/2026/00015", partner=DUPONT),
        ],
    )
    assert decisions[10].apply is None
    best = decisions[10].suggestions[0]
    assert (best.item_ids, best.rule) == ((1, 2), "reference_completed")


def test_two_open_items_of_the_partner_making_the_amount_are_suggested_together():
    decisions = decide(
        [op(10, "300.00", "VIR SEPA ACME", partner=ACME)],
        [
            item(1, "120.00", "INV/2026/00042"),
            item(2, "180.00", "INV/2026/00051"),
            item(3, "50.00", "INV/2026/00060"),
        ],
    )
    assert decisions[10].apply is None
    assert decisions[10].suggestions[0].item_ids == (1, 2)
    assert decisions[10].suggestions[0].rule == "partner_sum"


def test_invoices_of_two_partners_quoted_together_are_only_suggested():
    decisions = decide(
        [op(10, "300.00", "INV/2026/00042 INV/2026/00051")],
        [item(1, "120.00", "INV/2026/00042"), item(2, "180.00", "INV/2026/00051", partner=DUPONT)],
    )
    assert decisions[10].apply is None
    assert {c.item_ids for c in decisions[10].suggestions} >= {(1,), (2,)}


def test_a_partner_that_owns_none_of_the_quoted_items_stops_the_match():
    decisions = decide(
        [op(10, "120.00", "FACT INV/2026/00042", partner=DUPONT)],
        [item(1, "120.00", "INV/2026/00042")],
    )
    assert decisions[10].apply is None
    assert decisions[10].suggestions[0].item_ids == (1,)


def test_a_known_partner_with_one_open_item_of_that_amount_is_applied():
    decisions = decide(
        [op(10, "89.90", "PRLV SEPA ORANGE SA", partner=ACME)],
        [item(1, "89.90", "BILL/2026/0007"), item(2, "35.00", "BILL/2026/0008")],
    )
    assert decisions[10].apply.item_ids == (1,)
    assert decisions[10].apply.rule == "partner_amount"


def test_a_partner_guessed_from_a_merchant_name_never_settles_on_the_amount_alone():
    decisions = decide(
        [op(10, "89.90", "PRLV SEPA ORANGE SA", partner=ACME, partner_sure=False)],
        [item(1, "89.90", "BILL/2026/0007"), item(2, "35.00", "BILL/2026/0008")],
    )
    assert decisions[10].apply is None
    assert decisions[10].suggestions[0].item_ids == (1,)
    assert decisions[10].suggestions[0].rule == "partner_amount"


def test_one_amount_matching_two_invoices_of_the_partner_is_only_suggested():
    decisions = decide(
        [op(10, "120.00", "VIR ACME", partner=ACME)],
        [item(1, "120.00", "INV/2026/00042"), item(2, "120.00", "INV/2026/00050")],
    )
    assert decisions[10].apply is None
    assert {c.item_ids for c in decisions[10].suggestions} == {(1,), (2,)}


def test_a_reference_with_a_typo_stops_a_match_on_the_amount_alone():
    decisions = decide(
        [op(10, "120.00", "VIR ACME FACT INV/2026/00024", partner=ACME)],
        [item(1, "120.00", "INV/2026/00042")],
    )
    assert decisions[10].apply is None
    assert decisions[10].suggestions[0].item_ids == (1,)


def test_an_item_two_operations_claim_is_left_to_a_person():
    decisions = decide(
        [op(10, "120.00", "FACT INV/2026/00042"), op(11, "120.00", "FACT INV/2026/00042")],
        [item(1, "120.00", "INV/2026/00042")],
    )
    assert decisions[10].apply is None and decisions[11].apply is None


def test_a_quoted_item_wins_over_an_operation_that_only_has_its_amount():
    decisions = decide(
        [op(10, "120.00", "FACT INV/2026/00042"), op(11, "120.00", "VIR ACME", partner=ACME)],
        [item(1, "120.00", "INV/2026/00042")],
    )
    assert decisions[10].apply.item_ids == (1,)
    assert decisions[11].apply is None


def test_other_currencies_and_opposite_signs_never_match():
    decisions = decide(
        [
            op(10, "120.00", "FACT INV/2026/00042", currency="USD"),
            op(11, "-120.00", "INV/2026/00042"),
        ],
        [item(1, "120.00", "INV/2026/00042")],
    )
    assert decisions[10].apply is None and not decisions[10].suggestions
    assert decisions[11].apply is None


def usd(item_id, amount, amount_company, *refs, partner=ACME):
    return OpenItem(
        item_id,
        partner,
        Decimal(amount),
        "USD",
        tuple(refs),
        "invoice",
        refs[0],
        amount_company=Decimal(amount_company),
    )


def test_an_invoice_in_dollars_quoted_by_a_payment_in_euros_is_suggested_first():
    items = [
        usd(1, "1080.00", "1000.00", "INV/2026/00042"),
        usd(2, "500.00", "460.00", "INV/2026/00043"),
        item(3, "990.00", "INV/2026/00044"),  # same customer, euros, not quoted
        usd(4, "-300.00", "-280.00", "RINV/2026/00002"),
    ]
    operations = [
        op(10, "1000.00", "VIR ACME FACT INV/2026/00042", partner=ACME),
        op(11, "1460.00", "VIR ACME INV/2026/00042 INV/2026/00043"),
        op(12, "100.00", "VIR ACME AVOIR RINV/2026/00002"),
    ]
    decisions = {d.line_id: d for d in match_operations(operations, items, "EUR")}
    first = decisions[10].suggestions[0]
    assert decisions[10].apply is None
    assert (first.rule, first.item_ids, first.quoted) == (
        "reference_currency",
        (1,),
        ("INV/2026/00042",),
    )
    assert first.difference == Decimal("0.00")  # at the invoice's own rate
    # Two invoices in dollars quoted together: the pair, whose total is nearest, comes first.
    together = decisions[11].suggestions[0]
    assert (together.item_ids, together.difference) == ((1, 2), Decimal("0.00"))
    assert decisions[11].apply is None
    # A credit note in dollars is never suggested for an incoming payment.
    assert not decisions[12].suggestions


def test_an_invoice_and_its_credit_note_in_dollars_are_suggested_together():
    items = [
        usd(1, "1080.00", "1000.00", "INV/2026/00042"),
        usd(2, "-108.00", "-100.00", "RINV/2026/00002"),
    ]
    operations = [op(10, "900.00", "VIR ACME INV/2026/00042 RINV/2026/00002")]
    decision = match_operations(operations, items, "EUR")[0]
    assert decision.apply is None
    assert [(c.item_ids, c.difference) for c in decision.suggestions] == [
        ((1, 2), Decimal("0.00")),
        ((1,), Decimal("100.00")),
    ]


def test_an_operation_in_a_foreign_currency_gets_no_item_of_another_currency():
    """A dollar account's operation quoting a euro invoice of a euro company: what it pays
    in euros is the bank's conversion, not the books' (left to a person)."""
    decisions = match_operations(
        [op(10, "108.00", "FACT INV/2026/00042", currency="USD")],
        [item(1, "100.00", "INV/2026/00042")],
        "EUR",
    )
    assert decisions[0].apply is None and not decisions[0].suggestions


def test_an_item_in_another_currency_is_never_applied_even_when_the_figures_agree():
    decisions = {
        d.line_id: d
        for d in match_operations(
            [op(10, "120.00", "FACT INV/2026/00042", partner=ACME)],
            [usd(1, "120.00", "110.00", "INV/2026/00042")],
            "EUR",
        )
    }
    assert decisions[10].apply is None
    assert decisions[10].suggestions[0].difference == Decimal("-10.00")


def test_an_item_going_the_other_way_is_never_suggested_to_be_paid_in_part():
    """A payment of 50 quoting a credit note of 120 (-120 to settle) would write a
    counterpart of the wrong sign: it is no suggestion, alone or in a sum."""
    decisions = decide(
        [
            op(10, "50.00", "VIR ACME AVOIR RINV/2026/00007"),
            op(11, "50.00", "VIR ACME INV/2026/00042 RINV/2026/00007"),
        ],
        [
            item(1, "-120.00", "RINV/2026/00007", kind="credit_note"),
            item(2, "200.00", "INV/2026/00042"),
        ],
    )
    assert not decisions[10].suggestions
    assert (1,) not in {c.item_ids for c in decisions[11].suggestions}
    assert (1, 2) not in {c.item_ids for c in decisions[11].suggestions}


def test_an_invoice_and_its_credit_note_quoted_together_are_settled_by_their_total():
    decisions = decide(
        [op(10, "80.00", "VIR ACME INV/2026/00042 RINV/2026/00007")],
        [
            item(1, "-120.00", "RINV/2026/00007", kind="credit_note"),
            item(2, "200.00", "INV/2026/00042"),
        ],
    )
    assert decisions[10].apply.item_ids == (1, 2)
    assert decisions[10].apply.rule == "references_sum"


def test_without_reference_nor_partner_the_same_amount_is_a_weak_suggestion():
    decisions = decide([op(10, "77.00", "REMISE CHEQUES")], [item(1, "77.00", "INV/2026/00099")])
    assert decisions[10].apply is None
    assert decisions[10].suggestions[0].rule == "amount"


def test_many_items_are_looked_up_without_reading_them_all():
    items = [item(n, f"{n}.00", f"INV/2026/{n:05d}", partner=n % 50) for n in range(1, 20001)]
    operations = [op(n, f"{n}.00", f"VIR CLIENT FACT INV/2026/{n:05d}") for n in range(1, 2001)]
    decisions = decide(operations, items)
    assert all(decisions[n].apply and decisions[n].apply.item_ids == (n,) for n in range(1, 2001))


@pytest.mark.parametrize(
    ("name", "label", "key"),
    [
        (None, "CB CARREFOUR 12/11", "CARREFOUR"),
        (None, "PAIEMENT PAR CARTE X1234 LEROY MERLIN 03/11", "LEROY MERLIN"),
        (None, "PRLV SEPA ORANGE SA FACTURE MOBILE PRO", "ORANGE"),
        ("Orange S.A.", "PRLV SEPA ORANGE", "ORANGE"),
        (None, "VIR SEPA EMIS TRANSPORTS GIRAUD FACT F2026-0123", "TRANSPORTS GIRAUD"),
        (None, "CB AWS EMEA 03/11 USD 99.50", "AWS EMEA"),
        (None, "CHEQUE N 1234567", ""),
        (None, "REMISE CHEQUES N 7654321 3 CHQ", ""),
        (None, "FRAIS TENUE DE COMPTE", ""),
    ],
)
def test_the_counterparty_is_recognised_from_its_name_or_the_merchant_in_the_label(
    name, label, key
):
    assert counterparty_key(name, label) == key


def test_company_names_compare_without_accents_punctuation_or_legal_forms():
    assert company_key("Électricité de France S.A.") == company_key("ELECTRICITE DE FRANCE SA")
    assert company_key("Leroy Merlin") == "LEROY MERLIN"

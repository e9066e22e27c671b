"""From imported to reconciled, in plain Community (no reconciliation widget installed).

Operations booked on the Bridge emulator quote invoices and bills, or not; the import
reconciles what is exact and unique with Odoo's own accounting (the invoice shows paid, Odoo's
"Revert reconciliation" puts everything back), says why, and leaves the rest with suggestions
that an accounting user confirms in one click, in full or in part.
"""

from datetime import timedelta
from unittest.mock import patch

from odoo import Command, fields
from odoo.addons.bank_sync_aggregator.rights import ACCOUNTING_USER
from odoo.addons.bank_sync_aggregator.sync import pages, reconcile
from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common_bank_sync import company_user, load_french
from .common_sync import BridgeSyncCase


@tagged("post_install", "-at_install")
class TestReconcile(BridgeSyncCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.acme = cls.env["res.partner"].create({"name": "Acme SARL", "is_company": True})
        cls.giraud = cls.env["res.partner"].create(
            {"name": "Transports Giraud", "is_company": True}
        )

    def setUp(self):
        super().setUp()
        self.account = self.bridge_account()
        self.remote = int(self.account.remote_id)
        # The Demo Bank's own operations first: the tests' operations come on top.
        self.assertEqual(self.sync(self.account, client=self.client()).state, "done")

    # ------------------------------------------------------------------ helpers

    def invoice(self, amount, partner=None, move_type="out_invoice", currency=None, **values):
        move = self.init_invoice(
            move_type,
            partner=partner or self.acme,
            amounts=[amount],
            taxes=[],
            currency=currency,
            post=False,
        )
        if values:
            move.write(values)
        move.action_post()
        return move

    def book(self, amount, label):
        """An operation booked at the bank today; returns its journal line after a sync."""
        tx = self.emulator.add_transaction(self.remote, str(amount), label)
        run = self.sync(self.account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        line = self.lines(self.account).filtered(
            lambda line: (line.transaction_details or {}).get("id") == tx.id
        )
        self.assertEqual(len(line), 1)
        return line, run

    def suggestions(self, line):
        action = line.action_bank_sync_suggestions()
        return self.env["bank.sync.match.wizard"].browse(action["res_id"]).candidate_ids

    # ------------------------------------------------------------------ sure matches

    def test_an_invoice_quoted_with_its_amount_is_reconciled_as_it_arrives(self):
        invoice = self.invoice(120.0)
        line, run = self.book(120.0, f"VIR SEPA ACME SARL FACT {invoice.name}")
        self.assertTrue(line.is_reconciled)
        self.assertIn(invoice.payment_state, ("paid", "in_payment"))
        self.assertEqual(line.partner_id, self.acme)
        self.assertEqual(line.bank_sync_match_rule, "reference")
        self.assertIn(invoice.name, line.bank_sync_match_reason)
        self.assertIn("quotes its number", line.bank_sync_match_reason)
        self.assertEqual(run.reconciled_count, 1)
        load_french(self.env)
        french = line.with_context(lang="fr_FR").bank_sync_match_reason
        self.assertIn(invoice.name, french)
        self.assertNotEqual(french, line.bank_sync_match_reason)

        # Odoo's own "Revert reconciliation" puts everything back.
        line.action_undo_reconciliation()
        self.assertFalse(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "not_paid")
        _liquidity, suspense, other = line._seek_for_lines()
        self.assertEqual(suspense.amount_currency, -120.0)
        self.assertFalse(other)
        self.assertFalse(line.bank_sync_match_rule)

    def test_two_invoices_quoted_in_one_transfer_are_both_paid(self):
        first, second = self.invoice(70.0), self.invoice(55.5)
        line, _run = self.book(125.5, f"VIREMENT DE ACME REGLEMENT {first.name} {second.name}")
        self.assertTrue(line.is_reconciled)
        self.assertEqual(line.bank_sync_match_rule, "references_sum")
        for invoice in first + second:
            self.assertIn(invoice.payment_state, ("paid", "in_payment"))

    def test_a_vendor_bill_quoted_by_its_number_is_paid(self):
        bill = self.invoice(310.0, self.giraud, "in_invoice", ref="F2026-0042")
        line, _run = self.book(-310.0, "VIR SEPA EMIS TRANSPORTS GIRAUD FACT F2026-0042")
        self.assertTrue(line.is_reconciled)
        self.assertIn(bill.payment_state, ("paid", "in_payment"))

    def test_a_known_partner_paying_its_only_open_invoice_without_reference(self):
        """A partner found by its name in the label is a guess: its only open item of that
        amount comes first among the suggestions, no more. Once a person reconciled that
        counterparty with the partner, the next payment of its only open item of that amount
        is settled by itself."""
        invoice = self.invoice(88.0)
        self.invoice(45.0)
        line, _run = self.book(88.0, "VIR SEPA ACME SARL")
        self.assertEqual(line.partner_id, self.acme)
        self.assertEqual(line.bank_sync_partner_origin, "merchant")
        self.assertFalse(line.is_reconciled)
        best = self.suggestions(line)[0]
        self.assertEqual((best.item_ids.move_id, best.rule), (invoice, "partner_amount"))
        best.action_reconcile()
        self.assertIn(invoice.payment_state, ("paid", "in_payment"))

        later_invoice = self.invoice(61.0)
        later, _run = self.book(61.0, "VIR SEPA ACME SARL")
        self.assertEqual(later.bank_sync_partner_origin, "learned")
        self.assertTrue(later.is_reconciled)
        self.assertEqual(later.bank_sync_match_rule, "partner_amount")
        self.assertIn(later_invoice.payment_state, ("paid", "in_payment"))

    def test_a_partner_a_person_confirms_is_no_guess_any_more(self):
        self.company.bank_sync_auto_reconcile = False
        invoice = self.invoice(88.0)
        line, _run = self.book(88.0, "VIR SEPA ACME SARL")
        self.assertEqual(line.bank_sync_partner_origin, "merchant")
        line.partner_id = self.acme  # the accountant confirms who paid
        self.assertFalse(line.bank_sync_partner_origin)
        line.action_bank_sync_match()
        self.assertTrue(line.is_reconciled)
        self.assertEqual(line.bank_sync_match_rule, "partner_amount")
        self.assertIn(invoice.payment_state, ("paid", "in_payment"))

    def test_what_matching_reconciled_by_itself_teaches_no_partner(self):
        """Only a person's reconciliations teach who a counterparty is: a sure match by
        reference is not taken for one, so that no guess is ever built on a guess."""
        shop = self.env["res.partner"].create({"name": "Papeterie Lemaire", "is_company": True})
        bill = self.invoice(23.4, shop, "in_invoice", ref="PL-77812")
        line, _run = self.book(-23.4, "PRLV SEPA PAPLEM FACT PL-77812")
        self.assertTrue(line.is_reconciled)
        self.assertIn(bill.payment_state, ("paid", "in_payment"))
        later, _run = self.book(-9.9, "PRLV SEPA PAPLEM")
        self.assertFalse(later.partner_id)

    def test_a_payment_waiting_on_an_outstanding_account_is_matched(self):
        payment = self.env["account.payment"].create(
            {
                "payment_type": "inbound",
                "partner_type": "customer",
                "partner_id": self.acme.id,
                "amount": 640.0,
                "journal_id": self.account.journal_id.id,
                "memo": "CHQ 7788123",
            }
        )
        payment.action_post()
        line, _run = self.book(640.0, "REMISE CHQ 7788123")
        self.assertTrue(line.is_reconciled, line.bank_sync_match_reason)
        self.assertTrue(payment.is_matched)

    # ------------------------------------------------------------------ left to a person

    def test_a_line_of_a_contact_settles_the_invoice_on_the_invoices_partner(self):
        """The line's partner is a contact of the customer: the item that settles the invoice
        is the customer's, as the invoice's, so that the partner ledger is not split."""
        self.company.bank_sync_auto_reconcile = False
        contact = self.env["res.partner"].create({"name": "Jean Acme", "parent_id": self.acme.id})
        invoice = self.invoice(120.0)
        line, _run = self.book(120.0, f"VIR SEPA J ACME FACT {invoice.name}")
        self.assertFalse(line.is_reconciled)
        line.partner_id = contact
        reconcile.reconcile_with(line, invoice.line_ids.filtered("amount_residual").ids)
        self.assertTrue(line.is_reconciled)
        self.assertIn(invoice.payment_state, ("paid", "in_payment"))
        _liquidity, suspense, other = line._seek_for_lines()
        self.assertFalse(suspense)
        self.assertEqual(other.partner_id, self.acme)

    def test_only_documents_without_taxes_due_on_payment_skip_odoos_exchange_step(self):
        """Odoo's exchange-difference step also books the cash-basis rounding of documents
        whose taxes are due on payment: it is skipped only for the others, in the company's
        currency."""
        self.company.tax_exigibility = True
        transition = self.env["account.account"].create(
            {
                "name": "TVA en attente",
                "code": "445710",
                "account_type": "liability_current",
                "reconcile": True,
            }
        )
        tax = self.env["account.tax"].create(
            {
                "name": "TVA sur les encaissements",
                "amount": 20.0,
                "tax_exigibility": "on_payment",
                "cash_basis_transition_account_id": transition.id,
            }
        )
        on_payment = self.init_invoice(
            "out_invoice", partner=self.acme, amounts=[100.05], taxes=[tax], post=True
        )
        plain = self.invoice(50.0)
        self.env.ref("base.USD").active = True
        dollars = self.invoice(50.0, currency=self.env.ref("base.USD"))

        def receivable(move):
            return move.line_ids.filtered(lambda aml: aml.account_id.reconcile)

        moves = on_payment + plain + dollars
        cash_basis = reconcile._cash_basis_moves(self.env, set(moves.ids))
        self.assertEqual(cash_basis, {on_payment.id})
        for move, without in ((on_payment, False), (plain, True), (dollars, False)):
            self.assertEqual(
                reconcile._without_exchange_difference(receivable(move), cash_basis), without
            )
        # And a bank line quoting the document with taxes due on payment still settles it.
        line, _run = self.book(on_payment.amount_total, f"VIR ACME FACT {on_payment.name}")
        self.assertTrue(line.is_reconciled)
        self.assertIn(on_payment.payment_state, ("paid", "in_payment"))

    def test_a_partial_payment_is_suggested_and_reconciled_in_part_by_choice(self):
        invoice = self.invoice(200.0)
        line, run = self.book(80.0, f"VIR SEPA ACME ACOMPTE {invoice.name}")
        self.assertFalse(line.is_reconciled)
        self.assertEqual(run.suggested_count, 1)
        best = self.suggestions(line)[0]
        self.assertEqual(best.item_ids.move_id, invoice)
        self.assertEqual(best.rule, "reference_partial")
        self.assertAlmostEqual(best.difference, 120.0)
        best.action_reconcile()
        self.assertTrue(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "partial")
        self.assertAlmostEqual(invoice.amount_residual, 120.0)

    def test_one_amount_matching_two_invoices_is_left_to_a_person(self):
        first, second = self.invoice(99.0), self.invoice(99.0)
        line, _run = self.book(99.0, "VIR SEPA ACME SARL")
        self.assertFalse(line.is_reconciled)
        shown = self.suggestions(line)
        self.assertEqual(shown[:2].item_ids.move_id, first + second)
        shown[1].action_reconcile()
        self.assertIn(second.payment_state, ("paid", "in_payment"))
        self.assertEqual(first.payment_state, "not_paid")

    def test_a_typo_in_the_quoted_number_is_never_reconciled_automatically(self):
        invoice = self.invoice(150.0)
        typo = invoice.name[:-1] + str((int(invoice.name[-1]) + 1) % 10)
        line, _run = self.book(150.0, f"VIR SEPA ACME SARL FACT {typo}")
        self.assertFalse(line.is_reconciled)
        self.assertEqual(self.suggestions(line)[0].item_ids.move_id, invoice)

    def test_another_company_is_never_matched(self):
        other_company = self.setup_other_company()["company"]
        foreign = self.init_invoice(
            "out_invoice", partner=self.acme, amounts=[75.0], taxes=[], company=other_company
        )
        foreign.action_post()
        line_foreign, _run = self.book(75.0, f"FACT {foreign.name}")
        self.assertFalse(line_foreign.is_reconciled)
        self.assertFalse(self.suggestions(line_foreign).item_ids.move_id & foreign)

    # ------------------------------------------------------------------ another currency

    def dollar_invoice(self, amount, days_ago=30):
        """An invoice in dollars issued ``days_ago``, when a euro bought 1.08 dollars; a
        euro buys 1.10 dollars since yesterday."""
        usd = self.env.ref("base.USD")
        usd.active = True
        today = fields.Date.today()
        self.env["res.currency.rate"].create(
            [
                {"name": "2000-01-01", "rate": 1.08, "currency_id": usd.id},
                {"name": today - timedelta(days=1), "rate": 1.10, "currency_id": usd.id},
            ]
        )
        issued = today - timedelta(days=days_ago)
        return self.invoice(amount, currency=usd, invoice_date=issued, date=issued)

    def test_an_invoice_in_dollars_quoted_by_a_payment_in_euros_is_suggested_not_settled(self):
        """108 USD invoiced (100.00 EUR at the time), 99.00 EUR received quoting it: never
        settled by itself; suggested first, with the residual in dollars and the exchange
        difference; settled in full by a person, Odoo booking the difference."""
        invoice = self.dollar_invoice(108.0)
        line, run = self.book(99.0, f"VIR SEPA ACME FACT {invoice.name}")
        self.assertFalse(line.is_reconciled)
        self.assertEqual(run.suggested_count, 1)
        best = self.suggestions(line)[0]
        self.assertEqual(best.item_ids.move_id, invoice)
        self.assertEqual(best.rule, "reference_currency")
        self.assertEqual(best.residual_currency_id, self.env.ref("base.USD"))
        self.assertAlmostEqual(best.residual, 108.0)
        self.assertAlmostEqual(best.difference, 1.0)  # 100.00 EUR booked, 99.00 EUR paid
        self.assertIn("settled in full, the exchange difference", best.reason)
        self.assertIn("1.00", best.reason)
        best.action_reconcile()
        self.assertTrue(line.is_reconciled)
        self.assertIn(invoice.payment_state, ("paid", "in_payment"))
        receivable = invoice.line_ids.filtered(lambda aml: aml.account_id.reconcile)
        exchange = (
            receivable.full_reconcile_id.exchange_move_id
            | receivable.matched_credit_ids.exchange_move_id
        )
        self.assertEqual(len(exchange), 1)
        self.assertAlmostEqual(sum(exchange.line_ids.mapped("debit")), 1.0)
        _liquidity, _suspense, other = line._seek_for_lines()
        self.assertEqual(other.currency_id, self.env.ref("base.USD"))
        self.assertAlmostEqual(other.amount_currency, -108.0)
        self.assertAlmostEqual(other.balance, -99.0)
        # Odoo's "Revert reconciliation" puts everything back, exchange difference included.
        line.action_undo_reconciliation()
        self.assertEqual(invoice.payment_state, "not_paid")
        self.assertAlmostEqual(invoice.amount_residual, 108.0)
        self.assertAlmostEqual(receivable.amount_residual, 100.0)  # the difference undone too
        _liquidity, suspense, other = line._seek_for_lines()
        self.assertAlmostEqual(suspense.amount_currency, -99.0)
        self.assertFalse(other)
        self.assertFalse(receivable.full_reconcile_id)

    def test_a_payment_in_euros_far_below_a_dollar_invoice_pays_it_in_part(self):
        invoice = self.dollar_invoice(108.0)
        line, _run = self.book(50.0, f"VIR SEPA ACME ACOMPTE {invoice.name}")
        best = self.suggestions(line)[0]
        self.assertEqual((best.rule, best.item_ids.move_id), ("reference_currency", invoice))
        self.assertAlmostEqual(best.difference, 50.0)
        self.assertIn("pays", best.reason)
        self.assertIn("55.00", best.reason)  # 50 EUR at 1.10
        self.assertIn("108.00", best.reason)
        best.action_reconcile()
        self.assertTrue(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "partial")
        self.assertAlmostEqual(invoice.amount_residual, 53.0)  # 108 - 50 EUR at 1.10

    def test_a_dollar_account_never_settles_a_euro_invoice_at_the_books_rate(self):
        """What a line of a dollar account is worth in euros is the bank's conversion: a
        euro invoice it quotes is no suggestion, and settling it anyway is refused."""
        usd = self.env.ref("base.USD")
        usd.active = True
        invoice = self.invoice(100.0)
        journal = self.env["account.journal"].create(
            {"name": "Dollars", "code": "USDB", "type": "bank", "currency_id": usd.id}
        )
        line = self.env["account.bank.statement.line"].create(
            {
                "journal_id": journal.id,
                "date": fields.Date.today(),
                "payment_ref": f"VIR ACME FACT {invoice.name}",
                "amount": 108.0,
            }
        )
        self.assertNotIn(invoice, self.suggestions(line).item_ids.move_id)
        with self.assertRaises(UserError):
            reconcile.reconcile_with(line, invoice.line_ids.filtered("amount_residual").ids)
        self.assertFalse(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "not_paid")

    def test_a_dollar_invoice_is_never_paid_by_an_outgoing_payment(self):
        invoice = self.dollar_invoice(108.0)
        line, _run = self.book(-99.0, f"VIR SEPA ACME {invoice.name}")
        self.assertNotIn(invoice, self.suggestions(line).item_ids.move_id)
        item = invoice.line_ids.filtered(lambda aml: aml.account_id.reconcile)
        with self.assertRaises(UserError):
            reconcile.reconcile_with(line, item.ids)
        self.assertFalse(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "not_paid")

    def test_an_item_an_earlier_line_also_pays_is_left_to_a_person(self):
        """Two bank lines quote the same invoice with its amount: whichever import brings the
        second, neither is settled by itself (nobody decides between two payments for a
        person), as when both arrive in the same page."""
        self.company.bank_sync_auto_reconcile = False
        invoice = self.invoice(310.0)
        first, _run = self.book(310.0, f"VIR SEPA ACME FACT {invoice.name}")
        self.company.bank_sync_auto_reconcile = True
        second, run = self.book(310.0, f"VIR SEPA ACME REGLEMENT {invoice.name}")
        self.assertFalse(first.is_reconciled or second.is_reconciled)
        self.assertEqual(invoice.payment_state, "not_paid")
        self.assertEqual(run.reconciled_count, 0)
        self.assertEqual(self.suggestions(second)[0].item_ids.move_id, invoice)

    def test_an_item_another_line_quotes_is_not_settled_on_the_amount_alone(self):
        """A factor's transfer quotes two invoices of Acme for their total; Acme pays one of
        them, 100.00, without a reference. Matching that payment on its own (a selection) must
        see the factor's claim, though its amount is not 100.00: nobody decides for a person."""
        self.company.bank_sync_auto_reconcile = False
        first, second = self.invoice(100.0), self.invoice(50.0)
        factor_line, _run = self.book(150.0, f"VIR SEPA FACTOR REGL {first.name} {second.name}")
        factor_line.partner_id = self.giraud  # the factor, set by a person
        payment, _run = self.book(100.0, "VIR SEPA M DUPOND")
        payment.partner_id = self.acme  # a person knows who paid
        payment.action_bank_sync_match()
        self.assertFalse(payment.is_reconciled)
        self.assertEqual(first.payment_state, "not_paid")
        self.assertIn(first, self.suggestions(payment).item_ids.move_id)

    def test_a_line_converted_from_another_currency_is_left_to_a_person(self):
        """The bank paid 100 USD for 92.50 EUR: settling a euro invoice of 92.50 with it by
        itself would hide an exchange difference the books count otherwise."""
        usd = self.env.ref("base.USD")
        usd.active = True
        invoice = self.invoice(92.5)
        line = self.env["account.bank.statement.line"].create(
            {
                "journal_id": self.account.journal_id.id,
                "date": fields.Date.today(),
                "payment_ref": f"VIR ACME FACT {invoice.name}",
                "amount": 92.5,
                "foreign_currency_id": usd.id,
                "amount_currency": 100.0,
                "bank_sync_account_id": self.account.id,
            }
        )
        line.action_bank_sync_match()
        self.assertFalse(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "not_paid")
        self.assertFalse(self.suggestions(line))
        with self.assertRaises(UserError):
            reconcile.reconcile_with(line, invoice.line_ids.filtered("amount_residual").ids)
        self.assertFalse(line.is_reconciled)

    def test_a_credit_note_is_never_paid_in_part_by_a_payment(self):
        """A transfer of 50 quoting a credit note of 120: no suggestion pays the credit note
        with it, and a reconciliation forced with it is refused, the line left as it was."""
        credit_note = self.invoice(120.0, move_type="out_refund")
        line, _run = self.book(50.0, f"VIR SEPA ACME AVOIR {credit_note.name}")
        self.assertNotIn(credit_note, self.suggestions(line).item_ids.move_id)
        item = credit_note.line_ids.filtered(lambda aml: aml.account_id.reconcile)
        with self.assertRaises(UserError):
            reconcile.reconcile_with(line, item.ids)
        self.assertFalse(line.is_reconciled)
        _liquidity, suspense, other = line._seek_for_lines()
        self.assertEqual(suspense.amount_currency, -50.0)
        self.assertFalse(other)
        self.assertEqual(credit_note.payment_state, "not_paid")

    def test_a_reconciliation_that_fails_unexpectedly_leaves_the_line_imported(self):
        """Whatever goes wrong in one automatic reconciliation (another module's override),
        the operation is imported and left for a person; the next one is still matched."""
        broken, fine = self.invoice(71.0), self.invoice(72.0)
        real = reconcile.reconcile_many

        def flaky(pairs, **options):
            if any(line.amount == 71.0 for line, _ids in pairs):
                raise RuntimeError("an override failed")
            return real(pairs, **options)

        self.emulator.add_transaction(self.remote, "71.00", f"VIR ACME FACT {broken.name}")
        self.emulator.add_transaction(self.remote, "72.00", f"VIR ACME FACT {fine.name}")
        with patch.object(reconcile, "reconcile_many", flaky), mute_logger(reconcile.__name__):
            run = self.sync(self.account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.reconciled_count, 1)
        lines = self.lines(self.account)
        self.assertFalse(lines.filtered(lambda line: line.amount == 71.0).is_reconciled)
        self.assertTrue(lines.filtered(lambda line: line.amount == 72.0).is_reconciled)
        self.assertEqual(broken.payment_state, "not_paid")

    def test_matching_that_fails_leaves_the_page_imported(self):
        invoice = self.invoice(73.0)
        with (
            patch.object(pages, "match_lines", side_effect=RuntimeError("a bug in matching")),
            mute_logger(pages.__name__),
        ):
            line, run = self.book(73.0, f"VIR ACME FACT {invoice.name}")
        self.assertEqual(run.state, "done", run.error)
        self.assertFalse(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "not_paid")

    def test_a_bank_account_several_partners_declare_names_none_of_them(self):
        factor = self.env["res.partner"].create({"name": "Factor Finance", "is_company": True})
        iban = "FR7630006000011234567890189"
        for partner in (self.acme, factor):
            self.env["res.partner.bank"].create({"partner_id": partner.id, "acc_number": iban})
        own = "FR7610107001011234567890129"
        self.env["res.partner.bank"].create({"partner_id": self.giraud.id, "acc_number": own})
        by_iban, _names, _keys = self.env["account.bank.statement.line"]._bank_sync_partner_index(
            self.company, {iban, own}, set()
        )
        self.assertEqual(by_iban, {own: self.giraud.id})

    # ------------------------------------------------------------------ on demand, learning

    def test_lines_already_imported_are_matched_on_demand(self):
        self.company.bank_sync_auto_reconcile = False
        line, run = self.book(130.0, "VIR SEPA ACME COMMANDE CMD-88412")
        self.assertEqual(run.reconciled_count, 0)
        invoice = self.invoice(130.0, ref="CMD-88412")
        self.account.journal_id.action_bank_sync_match()
        self.assertTrue(line.is_reconciled)
        self.assertIn(invoice.payment_state, ("paid", "in_payment"))

    def test_a_merchant_reconciled_once_is_recognised_next_time(self):
        supermarket = self.env["res.partner"].create({"name": "Hyper du Centre"})
        bill = self.invoice(42.9, supermarket, "in_invoice")
        line, _run = self.book(-42.9, "CB CARREFOUR 12/11")
        self.assertFalse(line.partner_id, "nothing names the supermarket yet")
        self.assertEqual(self.suggestions(line)[0].item_ids.move_id, bill)
        self.suggestions(line)[0].action_reconcile()
        self.assertEqual(line.partner_id, supermarket)

        later, _run = self.book(-17.3, "CB CARREFOUR 19/11")
        self.assertEqual(later.partner_id, supermarket)
        self.assertEqual(later.bank_sync_partner_origin, "learned")

    def test_only_accounting_users_of_the_company_match(self):
        line, _run = self.book(12.0, "VIR SEPA ACME COMMANDE CMD-55120")
        auditor = company_user(
            self.env, "reconcile_auditor", self.company, groups="account.group_account_readonly"
        )
        with self.assertRaises(AccessError):
            line.with_user(auditor).action_bank_sync_match()
        with self.assertRaises(AccessError):
            line.with_user(auditor).action_bank_sync_suggestions()
        bookkeeper = company_user(
            self.env, "reconcile_bookkeeper", self.company, groups="account.group_account_invoice"
        )
        invoice = self.invoice(12.0, ref="CMD-55120")
        line.with_user(bookkeeper).action_bank_sync_match()
        self.assertIn(invoice.payment_state, ("paid", "in_payment"))

    def test_the_match_window_shows_nothing_of_another_company(self):
        other = self.setup_other_company()["company"]
        secret = self.init_invoice(
            "out_invoice", partner=self.acme, amounts=[7777.0], taxes=[], company=other
        )
        secret.action_post()
        journal = self.env["account.journal"].create(
            {"name": "Other bank", "code": "OBK", "type": "bank", "company_id": other.id}
        )
        their_line = self.env["account.bank.statement.line"].create(
            {
                "journal_id": journal.id,
                "date": fields.Date.today(),
                "payment_ref": f"Secret payment {secret.name}",
                "amount": 7777.0,
            }
        )
        bookkeeper = company_user(
            self.env, "reconcile_bookkeeper_a", self.company, groups=ACCOUNTING_USER
        )
        Wizard = self.env["bank.sync.match.wizard"].with_user(bookkeeper)
        with self.assertRaises(AccessError):
            Wizard.create({"line_id": their_line.id})
        # Nor a suggestion made up over RPC with the other company's open items.
        self.company.bank_sync_auto_reconcile = False
        line, _run = self.book(12.0, "VIR SEPA ACME")
        wizard = Wizard.create({"line_id": line.id})
        candidate = (
            self.env["bank.sync.match.wizard.candidate"]
            .with_user(bookkeeper)
            .create({"wizard_id": wizard.id, "item_ids": [Command.set(secret.line_ids.ids)]})
        )
        self.env.invalidate_all()  # a new request: nothing read by the test is cached
        self.assertFalse(candidate.documents)
        self.assertFalse(candidate.partner_id)
        self.assertEqual(candidate.residual, 0.0)


@tagged("post_install", "-at_install")
class TestReconcileFrenchChart(BridgeSyncCase):
    """The French chart's suspense account (471000) is reconcilable: the other bank lines
    waiting for their counterpart are no open items."""

    chart_template = "fr"

    def test_bank_lines_waiting_for_their_counterpart_are_not_candidates(self):
        account = self.bridge_account()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        waiting = self.lines(account).filtered(lambda line: not line.is_reconciled)
        self.assertTrue(waiting)
        suspense = account.journal_id.suspense_account_id
        self.assertTrue(suspense.reconcile, "the French chart's suspense account is reconcilable")
        for line in waiting[:5]:
            wizard = self.env["bank.sync.match.wizard"].create({"line_id": line.id})
            self.assertFalse(
                wizard.candidate_ids.item_ids.filtered("statement_line_id"),
                "another bank line's suspense item offered as a candidate",
            )

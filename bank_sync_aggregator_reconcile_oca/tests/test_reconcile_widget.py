"""Synchronised lines in OCA's reconciliation widget (account_reconcile_oca), installed from
PyPI by the tests' set-up (tools/addon_tests.sh --oca): they open there with their partner,
label and amount, reconcile there against an invoice, show reconciled there when the
synchronisation reconciled them, are never reconciled twice when OCA's own automatic
reconciliation models run too, and do not bury the invoices among the candidates."""

from unittest.mock import patch

from odoo import fields
from odoo.addons.bank_sync_aggregator.tests.common_sync import BridgeSyncCase
from odoo.tests import Form, HttpCase, tagged

WIDGET_FORM = "account_reconcile_oca.bank_statement_line_form_reconcile_view"


class WidgetCase(BridgeSyncCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.acme = cls.env["res.partner"].create({"name": "Acme SARL", "is_company": True})

    def setUp(self):
        super().setUp()
        self.account = self.bridge_account()
        self.remote = int(self.account.remote_id)
        self.assertEqual(self.sync(self.account, client=self.client()).state, "done")

    def invoice(self, amount, move_type="out_invoice"):
        # (dated today: OCA's matching models look 18 months back only)
        return self.init_invoice(
            move_type,
            partner=self.acme,
            amounts=[amount],
            taxes=[],
            invoice_date=fields.Date.context_today(self.env.user),
            post=True,
        )

    def receivable(self, invoice):
        return invoice.line_ids.filtered(lambda item: item.account_type == "asset_receivable")

    def book(self, amount, label, **context):
        tx = self.emulator.add_transaction(self.remote, str(amount), label)
        account = self.account.with_context(**context)
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        return self.lines(self.account).filtered(
            lambda line: (line.transaction_details or {}).get("id") == tx.id
        )

    def candidates(self, line, limit=80):
        """The widget's candidate list for ``line``, as its list view loads it."""
        view = self.env.ref(WIDGET_FORM)
        field = line.get_views([(view.id, "form")])["views"]["form"]["arch"]
        self.assertIn("bank_sync_line_id", field, "the widget tells the list which line it is for")
        domain = [
            ("parent_state", "=", "posted"),
            ("amount_residual", "!=", 0),
            ("account_id.reconcile", "=", True),
            ("company_id", "=", line.company_id.id),
            ("statement_line_id", "!=", line.id),
            ("bank_sync_waiting_bank_line", "=", False),
        ]
        result = (
            self.env["account.move.line"]
            .with_context(bank_sync_line_id=line.id)
            .web_search_read(domain, {"move_id": {}, "amount_residual": {}}, limit=limit)
        )
        return self.env["account.move.line"].browse([r["id"] for r in result["records"]]), result

    def without_oca_matching(self):
        """OCA's own matching models off: what the widget chooses is the synchronisation's."""
        self.env["account.reconcile.model"].search(
            [("company_id", "=", self.company.id), ("rule_type", "=", "invoice_matching")]
        ).active = False

    def chosen(self, line):
        """The open items the widget shows chosen as a line opens there."""
        with Form(line, view=WIDGET_FORM) as form:
            return self.env["account.move.line"].browse(
                [
                    item_id
                    for data in form.reconcile_data_info["data"]
                    if data["kind"] == "other"
                    for item_id in data.get("counterpart_line_ids") or ()
                ]
            ), form.can_reconcile


@tagged("post_install", "-at_install")
class TestReconcileWidget(WidgetCase):
    def test_a_synced_line_opens_in_the_widget_and_reconciles_there(self):
        invoice = self.invoice(200.0)
        line = self.book(80.0, f"VIR SEPA ACME SARL ACOMPTE {invoice.name}")
        self.assertFalse(line.is_reconciled, "a part payment is left to a person")
        with Form(line, view=WIDGET_FORM) as form:
            self.assertEqual(form.partner_id, self.acme)
            self.assertIn(invoice.name, form.payment_ref)
            liquidity = [d for d in form.reconcile_data_info["data"] if d["kind"] == "liquidity"]
            self.assertAlmostEqual(liquidity[0]["amount"], 80.0)
            chosen = {
                item_id
                for data in form.reconcile_data_info["data"]
                for item_id in data.get("counterpart_line_ids") or ()
            }
            if self.receivable(invoice).id not in chosen:
                # (the widget's own models may have chosen it already, as it opened)
                form.add_account_move_line_id = self.receivable(invoice)
            self.assertTrue(form.can_reconcile)
        line.reconcile_bank_line()
        self.assertTrue(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "partial")

    def test_the_invoice_a_line_quotes_opens_chosen_ready_to_validate(self):
        self.without_oca_matching()
        invoice, other = self.invoice(200.0), self.invoice(60.0)
        line = self.book(80.0, f"VIR SEPA ACME SARL ACOMPTE {invoice.name}")
        self.assertFalse(line.is_reconciled, "a part payment is left to a person")
        chosen, can_reconcile = self.chosen(line)
        self.assertEqual(chosen, self.receivable(invoice), "the quoted invoice")
        self.assertTrue(can_reconcile)
        self.assertFalse(line.is_reconciled, "nothing is reconciled until validated")
        self.assertEqual(invoice.payment_state, "not_paid")
        line.reconcile_bank_line()
        self.assertTrue(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "partial")
        self.assertAlmostEqual(invoice.amount_residual, 120.0)
        self.assertEqual(other.payment_state, "not_paid")

    def test_a_part_payment_of_a_bill_opens_chosen_for_what_it_pays(self):
        self.without_oca_matching()
        bill = self.invoice(200.0, move_type="in_invoice")
        line = self.book(-80.0, f"VIR SEPA EMIS ACME SARL ACOMPTE {bill.name}")
        self.assertFalse(line.is_reconciled)
        payable = bill.line_ids.filtered(lambda item: item.account_type == "liability_payable")
        chosen, can_reconcile = self.chosen(line)
        self.assertEqual(chosen, payable)
        self.assertTrue(can_reconcile)
        line.reconcile_bank_line()
        self.assertTrue(line.is_reconciled)
        self.assertEqual(bill.payment_state, "partial")
        self.assertAlmostEqual(bill.amount_residual, 120.0, msg="80 paid, not the whole bill")
        _liquidity, _suspense, other = line._seek_for_lines()
        self.assertEqual(other.account_id, payable.account_id, "nothing left on another account")
        self.assertAlmostEqual(sum(other.mapped("balance")), 80.0)

    def test_an_invoice_and_its_credit_note_quoted_together_open_chosen_together(self):
        """With automatic reconciliation off, the sure match waits for a person: both
        documents are chosen, the credit note first, so that the line's amount caps
        neither."""
        self.without_oca_matching()
        self.company.bank_sync_auto_reconcile = False
        invoice = self.invoice(100.0)
        credit_note = self.invoice(20.0, move_type="out_refund")
        line = self.book(80.0, f"VIR SEPA ACME SARL {invoice.name} {credit_note.name}")
        self.assertFalse(line.is_reconciled)
        chosen, can_reconcile = self.chosen(line)
        self.assertEqual(chosen, self.receivable(invoice) + self.receivable(credit_note))
        self.assertTrue(can_reconcile)
        line.reconcile_bank_line()
        self.assertTrue(line.is_reconciled)
        self.assertIn(invoice.payment_state, ("paid", "in_payment"))
        self.assertIn(credit_note.payment_state, ("paid", "in_payment"))

    def test_a_line_paying_more_than_the_invoice_it_quotes_opens_with_nothing_chosen(self):
        """Chosen, the invoice would leave the rest of the line on the customer's account: a
        choice for the person, not for the synchronisation."""
        self.without_oca_matching()
        invoice = self.invoice(200.0)
        line = self.book(250.0, f"VIR SEPA ACME SARL FACT {invoice.name}")
        self.assertFalse(line.is_reconciled)
        chosen, _can_reconcile = self.chosen(line)
        self.assertFalse(chosen)

    def test_a_line_quoting_nothing_opens_with_nothing_chosen(self):
        self.without_oca_matching()
        self.invoice(95.0)
        self.invoice(95.0)
        line = self.book(95.0, "VIR SEPA ACME SARL")
        self.assertFalse(line.is_reconciled)
        chosen, _can_reconcile = self.chosen(line)
        self.assertFalse(chosen, "two invoices of that amount: the person chooses")

    def test_lines_the_synchronisation_reconciled_show_reconciled_there(self):
        invoice = self.invoice(120.0)
        line = self.book(120.0, f"VIR SEPA ACME SARL FACT {invoice.name}")
        self.assertTrue(line.is_reconciled)
        with Form(line, view=WIDGET_FORM) as form:
            self.assertTrue(form.is_reconciled)
            shown = {d["account_id"][0] for d in form.reconcile_data_info["data"]}
            self.assertIn(self.receivable(invoice).account_id.id, shown)
        # And the widget's own "unreconcile" puts it back, as Odoo's revert does.
        line.unreconcile_bank_line()
        self.assertFalse(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "not_paid")

    def test_with_the_widgets_own_automatic_reconciliation_nothing_is_reconciled_twice(self):
        models = self.env["account.reconcile.model"].search(
            [("company_id", "=", self.company.id), ("rule_type", "=", "invoice_matching")]
        )
        models.write({"auto_reconcile": True, "match_text_location_label": True})
        invoices = self.invoice(75.0) + self.invoice(140.0)
        creates = []
        create = type(self.env["account.bank.statement.line"]).create

        def counted(records, vals_list):
            creates.append(len(vals_list))
            return create(records, vals_list)

        for invoice in invoices:
            self.emulator.add_transaction(
                self.remote, str(invoice.amount_total), f"VIR SEPA ACME SARL FACT {invoice.name}"
            )
        with patch.object(type(self.env["account.bank.statement.line"]), "create", counted):
            # (the widget reconciles at creation only outside tests, unless asked)
            run = self.sync(
                self.account.with_context(_test_account_reconcile_oca=True), client=self.client()
            )
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(creates, [2], "one batched creation for the page")
        lines = self.lines(self.account).filtered(lambda item: item.amount in (75.0, 140.0))
        self.assertTrue(
            lines.filtered(lambda item: item.is_reconciled and not item.bank_sync_match_rule),
            "the widget's own models reconciled some as they were created",
        )
        for invoice in invoices:
            self.assertIn(invoice.payment_state, ("paid", "in_payment"))
            self.assertAlmostEqual(invoice.amount_residual, 0.0)
            payments = invoice.line_ids.matched_credit_ids
            self.assertEqual(len(payments), 1, "paid once")


@tagged("post_install", "-at_install")
class TestReconcileWidgetCandidates(WidgetCase):
    """The French chart's suspense account (471000) is reconcilable."""

    chart_template = "fr"

    def test_the_quoted_invoice_comes_first_and_no_bank_line_among_the_candidates(self):
        invoices = self.invoice(310.0) + self.invoice(42.0) + self.invoice(65.0)
        quoted = invoices[0]
        line = self.book(300.0, f"VIR SEPA ACME SARL FACT {quoted.name}")
        waiting = self.lines(self.account).filtered(lambda item: not item.is_reconciled)
        self.assertGreater(len(waiting), 20, "plenty of bank lines wait for their counterpart")
        shown, result = self.candidates(line)
        self.assertEqual(shown[:1], self.receivable(quoted), "the invoice quoted comes first")
        self.assertFalse(shown.filtered("statement_line_id"), "no other bank line is offered")
        self.assertEqual(result["length"], len(shown))
        self.assertLessEqual(len(shown), 10)
        # Page by page, nothing is shown twice nor lost.
        page_one, _ = self.candidates(line, limit=2)
        remaining = (
            self.env["account.move.line"]
            .with_context(bank_sync_line_id=line.id)
            .web_search_read(
                [
                    ("parent_state", "=", "posted"),
                    ("amount_residual", "!=", 0),
                    ("account_id.reconcile", "=", True),
                    ("company_id", "=", line.company_id.id),
                    ("bank_sync_waiting_bank_line", "=", False),
                ],
                {},
                offset=2,
                limit=80,
            )
        )
        ids = page_one.ids + [r["id"] for r in remaining["records"]]
        self.assertEqual(sorted(ids), sorted(shown.ids))
        self.assertEqual(len(ids), len(set(ids)))


@tagged("post_install", "-at_install")
class TestReconcileWidgetBrowser(WidgetCase, HttpCase):
    def test_the_widget_opens_with_the_quoted_invoice_chosen_in_the_browser(self):
        self.without_oca_matching()
        invoice = self.invoice(200.0)
        line = self.book(80.0, f"VIR SEPA ACME SARL ACOMPTE {invoice.name}")
        self.assertFalse(line.is_reconciled)
        journal = line.journal_id
        self.start_tour(
            f"/odoo/account.journal/{journal.id}"
            "/action-account_reconcile_oca.action_bank_statement_line_reconcile",
            "bank_sync_oca_quoted_invoice_chosen",
            login=self.env.user.login,
            timeout=120,
        )
        self.assertTrue(line.is_reconciled)
        self.assertEqual(invoice.payment_state, "partial")
        self.assertAlmostEqual(invoice.amount_residual, 120.0)

import json

from odoo.tests import HttpCase, tagged

from .common_bank_sync import BankSyncCommon

CONNECTIONS_URL = "/odoo/action-bank_sync_aggregator.bank_sync_connection_action"
#: Logged by the browser when the page unloads: the chosen bank sends the user to the
#: aggregator's hosted page, which is not Odoo's web client, so no tour can go on there.
LEFT_FOR_THE_AGGREGATOR = "left for the aggregator's page"


@tagged("post_install", "-at_install")
class TestBankPickerBrowser(BankSyncCommon, HttpCase):
    """The "Add a bank" picker in a real browser: a bank's whole row chooses it, as its Choose
    button does (tours in static/tests/tours/bank_picker_tour.js)."""

    def _run_picker_tour(self, tour):
        name = json.dumps(tour)
        options = json.dumps({"startUrl": CONNECTIONS_URL, "stepDelay": 0})
        signal = json.dumps(LEFT_FOR_THE_AGGREGATOR)
        self.browser_js(
            CONNECTIONS_URL,
            f"window.addEventListener('beforeunload', () => console.log({signal}));"
            f" odoo.startTour({name}, {options})",
            ready=f"odoo.isTourReady({name})",
            login="accountman",
            timeout=120,
            success_signal=LEFT_FOR_THE_AGGREGATOR,
        )
        # The sessions opened at the aggregator: one, for the bank chosen, not one per event.
        return self.env["bank.sync.connect.session"].sudo().search([]).mapped("institution_id")

    def test_click_on_a_bank_name_chooses_the_bank(self):
        opened = self._run_picker_tour("bank_sync_picker_click_bank_name")
        self.assertEqual(opened, ["QNTOFRP1"])  # Qonto, whose name was clicked

    def test_enter_on_a_bank_row_chooses_the_bank(self):
        opened = self._run_picker_tour("bank_sync_picker_enter_on_bank_row")
        self.assertEqual(opened, ["PSSTFRPP"])  # La Banque Postale

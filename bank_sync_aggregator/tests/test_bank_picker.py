import re
from pathlib import Path

from odoo.tests import HttpCase, tagged

from .common_bank_sync import BankSyncCommon, run_tour_until_the_aggregator

CONNECTIONS_URL = "/odoo/action-bank_sync_aggregator.bank_sync_connection_action"
UNIT_TESTS = Path(__file__).parent.parent / "static" / "tests" / "bank_picker_field.test.js"


@tagged("post_install", "-at_install")
class TestBankPickerBrowser(BankSyncCommon, HttpCase):
    """The "Add a bank" picker in a real browser: a bank's whole row chooses it, as its Choose
    button does (tours in static/tests/tours/bank_picker_tour.js)."""

    def _run_picker_tour(self, tour):
        run_tour_until_the_aggregator(self, tour, CONNECTIONS_URL, "accountman")
        # The sessions opened at the aggregator: one, for the bank chosen, not one per event.
        return self.env["bank.sync.connect.session"].sudo().search([]).mapped("institution_id")

    def test_click_on_a_bank_name_chooses_the_bank(self):
        opened = self._run_picker_tour("bank_sync_picker_click_bank_name")
        self.assertEqual(opened, ["QNTOFRP1"])  # Qonto, whose name was clicked

    def test_enter_on_a_bank_row_chooses_the_bank(self):
        opened = self._run_picker_tour("bank_sync_picker_enter_on_bank_row")
        self.assertEqual(opened, ["PSSTFRPP"])  # La Banque Postale

    def test_the_choose_button_still_chooses_its_bank_once(self):
        opened = self._run_picker_tour("bank_sync_picker_choose_button")
        self.assertEqual(opened, ["SHNEFRP1"])  # Shine, once: the row does not choose again


def _hoot_id(name):
    """The id by which the web client's test page selects a suite (as Odoo's own runner)."""
    value = 0
    for char in name:
        value = ((value << 5) - value + ord(char)) & 0xFFFFFFFF
    return f"{value:08x}"


@tagged("post_install", "-at_install")
class TestBankPickerUnit(HttpCase):
    """The widget's unit tests (static/tests/bank_picker_field.test.js) on the web client's
    test page, against Odoo's mock server."""

    def test_bank_picker_widget_unit_tests(self):
        suite = _hoot_id("@bank_sync_aggregator")
        with self.assertLogs(__name__, "DEBUG") as logs:
            self.browser_js(
                f"/web/tests?headless&loglevel=2&preset=desktop&timeout=15000&suite={suite}",
                "",
                "",
                login="admin",
                timeout=900,
                success_signal="[HOOT] test suite succeeded",
            )
        # Every test of the file ran and passed (an empty selection would also "succeed").
        written = re.findall(r'^test\("(.+?)"', UNIT_TESTS.read_text(), re.MULTILINE)
        passed = re.findall(
            r'\[HOOT\] Test "@bank_sync_aggregator/bank_picker_field/(.+?)" passed',
            "\n".join(logs.output),
        )
        self.assertTrue(written)
        self.assertCountEqual(passed, written)


# Drives the real web client: Add a bank, consent, type "societe" then Enter (no Search
# button), the matched group is shown, and Choose on a line the search just loaded opens the
# aggregator's page.
PICKER_JS = """
(async () => {
    const modal = (selector) => () => document.querySelector(".modal " + selector);
    const wait = (find, what) => new Promise((resolve, reject) => {
        const start = Date.now();
        const timer = setInterval(() => {
            const found = find();
            if (found) { clearInterval(timer); resolve(found); }
            else if (Date.now() - start > 20000) {
                clearInterval(timer); reject(new Error("test failed: no " + what));
            }
        }, 100);
    });
    const byText = (selector, text) => () => [...document.querySelectorAll(selector)]
        .find((el) => el.textContent.trim() === text);
    (await wait(byText(".o_control_panel button", "Add a bank"), "Add a bank")).click();
    for (const name of ["accept_terms", "allow_transfer"]) {
        (await wait(modal(`div[name='${name}'] input`), name)).click();
    }
    (await wait(modal("button[name='action_next']"), "next")).click();
    await wait(byText(".modal td", "Crédit Agricole"), "most requested banks");
    const input = await wait(modal("div[name='search'] input"), "search");
    input.value = "societe";
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    const label = "Boursorama Banque (Société Générale group)";
    const cell = await wait(byText(".modal td", label), "search result");
    await wait(() => !byText(".modal td", "Crédit Agricole")(), "filtered list");
    // Choose leaves Odoo for the aggregator's page: that departure is the success (the
    // Python side then checks the session was opened for that bank).
    window.addEventListener("beforeunload", () => console.log("test successful"));
    cell.closest("tr").querySelector("button[name='action_choose']").click();
})().catch((error) => console.error(error.message));
"""


@tagged("post_install", "-at_install")
class TestBankPickerSearchBrowser(BankSyncCommon, HttpCase):
    """Searching the "Add a bank" picker in a real browser: Enter filters, Choose opens the
    aggregator's page for the bank the search found."""

    def test_bank_picker_searches_on_enter_in_the_browser(self):
        self.browser_js(
            "/odoo/action-bank_sync_aggregator.bank_sync_connection_action",
            PICKER_JS,
            login="accountman",
            timeout=120,
        )
        session = self.env["bank.sync.connect.session"].sudo().search([], order="id desc", limit=1)
        self.assertEqual(session.institution_id, "BOUSFRPP")

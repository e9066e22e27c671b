"""The bank journal's dashboard card and the list of a journal's imported operations."""

import json
import re
from datetime import date, datetime

from lxml import etree

from odoo.exceptions import UserError
from odoo.tests import new_test_user, tagged
from odoo.tools.safe_eval import safe_eval

from .common_sync import SyncCase


class _Obj(dict):
    """A JavaScript-like object for the card's expressions: missing keys read as undefined."""

    def __getattr__(self, name):
        return self.get(name)


def _js_to_python(expr):
    """The few JavaScript forms the card's ``t-if`` use, as Python (test helper only)."""
    expr = re.sub(r"([\w.]+|\[[^\]]*\])\.includes\(([\w.]+)\)", r"(\2 in \1)", expr)
    expr = re.sub(r"!(?!=)", " not ", expr)
    return expr.replace("&&", " and ").replace("||", " or ")


def _condition_holds(element, scope):
    """Whether the ``t-if``/``t-elif``/``t-else`` of ``element`` lets it render."""
    if element.get("t-if") is not None:
        return bool(safe_eval(_js_to_python(element.get("t-if")), dict(scope)))
    if element.get("t-elif") is not None or element.get("t-else") is not None:
        previous = element.getprevious()
        while previous is not None:
            if _condition_holds(previous, scope):
                return False
            if previous.get("t-if") is not None:
                break
            previous = previous.getprevious()
        if element.get("t-elif") is not None:
            return bool(safe_eval(_js_to_python(element.get("t-elif")), dict(scope)))
    return True


def _render_text(element, scope):
    """The text ``element`` shows: its rendered children and their ``t-esc`` values."""
    if element.get("t-esc") is not None:
        parts = [str(safe_eval(_js_to_python(element.get("t-esc")), dict(scope)) or "")]
    else:
        parts = [element.text or ""]
        for child in element:
            if _condition_holds(child, scope):
                parts.append(_render_text(child, scope))
            parts.append(child.tail or "")
    return "".join(parts)


@tagged("post_install", "-at_install")
class TestJournalCard(SyncCase):
    """What a user sees on a synced journal's card, and where "Transactions" leads."""

    def setUp(self):
        super().setUp()
        self.use_test_clock()
        self.connection = self.make_connection()
        self.account = self.checking(self.connection)
        self.journal = self.link(self.account)

    # ------------------------------------------------------------------ helpers

    def card(self, journal):
        """The dashboard data the web client receives for ``journal`` (as JSON)."""
        journal.invalidate_recordset(["kanban_dashboard"])
        return json.loads(journal.kanban_dashboard)

    def kanban_arch(self):
        arch = self.env["account.journal"].get_views(
            [(self.env.ref("account.account_journal_dashboard_kanban_view").id, "kanban")]
        )["views"]["kanban"]["arch"]
        return etree.fromstring(arch)

    def shown(self, journal, xpath):
        """Texts of the card elements at ``xpath`` that render for ``journal``'s card."""
        dashboard = _Obj(self.card(journal))
        scope = {
            "dashboard": dashboard,
            "journal_type": journal.type,
            "journal_is_empty": not journal.has_entries,
            "true": True,
            "false": False,
        }
        texts = []
        for element in self.kanban_arch().xpath(xpath):
            chain = [element, *element.iterancestors()]
            if all(_condition_holds(node, scope) for node in chain):
                texts.append(" ".join(_render_text(element, scope).split()))
        return texts

    # -- the card's Transactions -------------------------------------------------------------------

    def test_transactions_opens_exactly_the_journal_operations(self):
        self.sync(self.account)
        synced = self.lines(self.account)
        self.assertTrue(synced, "the sandbox brought operations")
        other_journal = self.company_data["default_journal_bank"]
        manual = self.env["account.bank.statement.line"].create(
            {"journal_id": other_journal.id, "payment_ref": "Cash deposit", "amount": 100.0}
        )

        # The card's "Transactions" button (and the journal's name) call open_action.
        action = self.journal.open_action()
        self.assertEqual(action["res_model"], "account.bank.statement.line")
        self.assertIn(self.journal.name, action["name"])
        listed = self.env["account.bank.statement.line"].search(action["domain"])
        journal_lines = self.env["account.bank.statement.line"].search(
            [("journal_id", "=", self.journal.id)]
        )
        self.assertEqual(listed, journal_lines)
        self.assertEqual(listed.journal_id, self.journal)
        self.assertLessEqual(synced, listed)
        self.assertNotIn(manual, listed)
        # A journal that is not synced keeps Odoo's statements.
        self.assertEqual(other_journal.open_action()["res_model"], "account.bank.statement")
        # The "Statements" entry of the card's menu is still Odoo's own.
        statements = self.journal.with_context(
            action_name="action_bank_statement_tree"
        ).open_action()
        self.assertEqual(statements["res_model"], "account.bank.statement")

        # The browser loads the action's views and reads the rows with the list's fields.
        Line = self.env["account.bank.statement.line"].with_context(**action["context"])
        views = Line.get_views(
            [(view_id, kind) for view_id, kind in action["views"]]
            + [(action["search_view_id"][0], "search")]
        )["views"]
        columns = etree.fromstring(views["list"]["arch"]).xpath("//field/@name")
        for name in (
            "date",
            "payment_ref",
            "partner_id",
            "amount",
            "currency_id",
            "ref",
            "bank_sync_operation_type",
            "bank_sync_value_date",
            "is_reconciled",
        ):
            self.assertIn(name, columns)
        search = etree.fromstring(views["search"]["arch"])
        self.assertTrue(search.xpath("//filter[@name='not_reconciled']"))
        self.assertTrue(search.xpath("//filter[@context=\"{'group_by': 'partner_id'}\"]"))
        self.assertIn("form", views)
        rows = Line.web_search_read(
            action["domain"], {name: {} for name in columns if name in Line._fields}
        )
        self.assertEqual(rows["length"], len(journal_lines))
        by_id = {row["id"]: row for row in rows["records"]}
        line = synced.filtered("ref")[:1] or synced[:1]
        self.assertEqual(by_id[line.id]["payment_ref"], line.payment_ref)
        self.assertEqual(by_id[line.id]["ref"], line.ref)
        self.assertEqual(by_id[line.id]["amount"], line.amount)

        # The same list from the journal's form and from the synchronised account's form.
        form = etree.fromstring(
            self.env["account.journal"].get_views([(False, "form")])["views"]["form"]["arch"]
        )
        self.assertTrue(form.xpath("//button[@name='action_open_bank_sync_lines']"))
        self.assertEqual(self.journal.action_open_bank_sync_lines()["domain"], action["domain"])
        account_form = etree.fromstring(
            self.env["bank.sync.account"].get_views([(False, "form")])["views"]["form"]["arch"]
        )
        action_id = str(self.env.ref("bank_sync_aggregator.account_bank_statement_line_action").id)
        self.assertTrue(account_form.xpath(f"//button[@name='{action_id}']"))

    def test_an_invoicing_user_reads_the_operations_and_opens_one(self):
        self.sync(self.account)
        clerk = new_test_user(
            self.env,
            login="bsa_card_clerk",
            groups="account.group_account_invoice",
            company_id=self.company.id,
            company_ids=[self.company.id],
        )
        journal = self.journal.with_user(clerk)
        action = journal.open_action()
        Line = self.env["account.bank.statement.line"].with_user(clerk)
        views = Line.get_views(action["views"])["views"]
        list_fields = etree.fromstring(views["list"]["arch"]).xpath("//field/@name")
        rows = Line.web_search_read(action["domain"], {name: {} for name in list_fields})
        self.assertEqual(rows["length"], len(self.lines(self.account)))
        form_fields = etree.fromstring(views["form"]["arch"]).xpath("//field/@name")
        spec = {name: {} for name in form_fields}
        spec["bank_sync_account_id"] = {"fields": {"display_name": {}}}
        record = Line.browse(rows["records"][0]["id"]).web_read(spec)[0]
        self.assertEqual(record["bank_sync_account_id"]["id"], self.account.id)
        self.assertEqual(record["journal_id"], self.journal.id)

    # -- synchronisation switched off --------------------------------------------------------------

    def test_sync_off_hides_state_sync_now_and_reconnect(self):
        self.sync(self.account)
        self.connection.write({"state": "temporary_failure", "message": "Bank down"})
        sync_now = "//a[@name='action_bank_sync_now']"
        reconnect = "//button[@name='action_bank_sync_reconnect']"
        badges = (
            "//div[@name='bank_sync_status']"
            "/span[contains(@class, 'badge') or contains(@t-attf-class, 'badge')]"
        )
        # On: the state, Sync now, and Reconnect since the bank needs it.
        self.assertEqual(self.shown(self.journal, badges), ["Temporary failure"])
        self.assertEqual(self.shown(self.journal, sync_now), ["Sync now"])
        self.assertEqual(self.shown(self.journal, reconnect), ["Reconnect"])

        self.company.bank_sync_enabled = False
        self.assertFalse(self.card(self.journal)["bank_sync_enabled"])
        self.assertEqual(self.shown(self.journal, badges), ["Synchronisation off"])
        self.assertEqual(self.shown(self.journal, sync_now), [])
        self.assertEqual(self.shown(self.journal, reconnect), [])
        self.assertEqual(self.shown(self.journal, "//div[contains(@t-att-title, 'message')]"), [])
        # The server refuses it too, whatever the page shows.
        with self.assertRaises(UserError):
            self.journal.action_bank_sync_now()

    # -- dates in the reader's format --------------------------------------------------------------

    def test_last_sync_in_the_user_time_zone_and_date_format(self):
        self.connection.last_sync_date = datetime(2026, 11, 22, 13, 44, 40)
        self.env.user.tz = "Europe/Paris"
        self.assertEqual(self.card(self.journal)["bank_sync_last_sync"], "11/22/2026 14:44:40")
        self.env.user.tz = "America/New_York"
        self.assertEqual(self.card(self.journal)["bank_sync_last_sync"], "11/22/2026 08:44:40")
        lang = self.env["res.lang"]._lang_get(self.env.user.lang)
        lang.date_format = "%d/%m/%Y"
        self.assertEqual(self.card(self.journal)["bank_sync_last_sync"], "22/11/2026 08:44:40")
        shown = self.shown(
            self.journal, "//div[@name='bank_sync_status']/span[contains(., 'Last')]"
        )
        self.assertEqual(shown, ["Last synchronisation: 22/11/2026 08:44:40"])
        status = self.kanban_arch().xpath("//div[@name='bank_sync_status']")[0]
        self.assertNotIn("UTC", etree.tostring(status, encoding="unicode"))

    def test_consent_date_is_apart_from_its_label(self):
        self.connection.consent_expiry = date(2027, 5, 21)
        self.assertEqual(self.card(self.journal)["bank_sync_consent_expiry"], "05/21/2027")
        consent = self.kanban_arch().xpath("//div[@name='bank_sync_health']/span[1]")[0]
        value = consent.xpath(".//*[@t-esc='dashboard.bank_sync_consent_expiry']")[0]
        # Its own element with a left margin: never glued to "Consent until" in any language.
        self.assertEqual(value.tag, "span")
        self.assertIn("ms-1", value.get("class"))

    # -- a linked journal waiting for its first import ---------------------------------------------

    def test_linked_journal_without_operations_waits_for_its_first_sync(self):
        self.assertFalse(self.journal.has_entries)
        helper = "//t[@name='empty_journal_helper']//span"
        self.assertEqual(
            self.shown(self.journal, helper), ["Waiting for the first synchronisation."]
        )
        self.assertEqual(
            self.shown(self.journal, "//a[@name='action_bank_sync_now']"), ["Sync now"]
        )
        # An unlinked empty bank journal keeps Odoo's invitation.
        unlinked = self.env["account.journal"].create(
            {"name": "Other bank", "code": "OTHB", "type": "bank", "company_id": self.company.id}
        )
        self.assertEqual(
            self.shown(unlinked, helper), ["Connect your bank. Match invoices automatically."]
        )
        self.company.bank_sync_enabled = False
        self.assertEqual(
            self.shown(self.journal, helper),
            ["Bank synchronisation is off: no operation is imported."],
        )
        # Once operations are imported the helper goes.
        self.company.bank_sync_enabled = True
        self.sync(self.account)
        self.journal.invalidate_recordset(["has_entries"])
        self.assertEqual(self.shown(self.journal, helper), [])

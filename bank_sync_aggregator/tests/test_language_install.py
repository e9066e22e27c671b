"""Adding a language with the addon installed: Odoo's own wizard, on the generic chart and on
the French one, and the fields this addon adds to models that Odoo's core reads as SQL columns.

How the addon installs, upgrades and uninstalls next to languages (French installed before or
after it) is checked on real databases by ``tools/install_check.py`` (part of ``make test``).
"""

from odoo import Command
from odoo.addons.account.models.chart_template import TEMPLATE_MODELS
from odoo.tests import tagged

from .common_bank_sync import BankSyncCompanyCase

MODULE = "bank_sync_aggregator"


class LanguageInstallMixin:
    """Run Odoo's "Add Languages" wizard as Settings > Languages does."""

    def install_language(self, code="fr_FR"):
        lang = self.env["res.lang"].with_context(active_test=False).search([("code", "=", code)])
        wizard = self.env["base.language.install"].create({"lang_ids": [Command.set(lang.ids)]})
        wizard.lang_install()
        self.assertTrue(lang.active, f"{code} is not active after the wizard")
        return lang

    def bank_journal(self, company):
        return self.env["account.journal"].search(
            [("company_id", "=", company.id), ("type", "=", "bank")], limit=1
        )

    def link_to_a_connection(self, journal):
        """The journal linked to a synchronised account whose connection carries an
        aggregator message (the field that used to break language installation)."""
        provider = self.env["bank.sync.provider"].create(
            {"kind": "sandbox", "company_id": journal.company_id.id}
        )
        connection = self.env["bank.sync.connection"].create(
            {
                "provider_id": provider.id,
                "company_id": journal.company_id.id,
                "remote_id": "lang-1",
                "institution_name": "Banque Test",
                "state": "action_needed",
                "message": "Please confirm your identity at the bank.",
            }
        )
        self.env["bank.sync.account"].create(
            {
                "connection_id": connection.id,
                "remote_id": "lang-acc-1",
                "name": "Compte courant",
                "journal_id": journal.id,
            }
        )
        return connection


@tagged("post_install", "-at_install")
class TestAddonFieldsOnCoreModels(BankSyncCompanyCase):
    """Odoo reads some fields of core models as SQL columns: a field this addon adds there
    must have one."""

    def test_chart_template_models_have_no_computed_translatable_field(self):
        # account.chart.template._load_translations reads every translatable field of these
        # models as a column when a language is installed; a non-stored one crashes it.
        offenders = [
            f"{model}.{name} (added by {', '.join(sorted(field._modules))})"
            for model in TEMPLATE_MODELS
            for name, field in self.env[model]._fields.items()
            if field.translate and not field.store
        ]
        self.assertFalse(offenders, "non-stored translatable fields break 'Add Languages'")

    def test_fields_added_to_core_models_are_not_computed_translations(self):
        # The same rule on every core model this addon extends (journals, statement lines,
        # companies...): translation export and import read translatable fields as columns.
        offenders = [
            f"{model_name}.{name}"
            for model_name, model in self.env.registry.items()
            if model._original_module != MODULE
            for name, field in model._fields.items()
            if MODULE in (field._modules or ()) and field.translate and not field.store
        ]
        self.assertFalse(offenders)

    def test_core_sql_reads_of_template_models_succeed(self):
        # The query that failed, run directly for every company with a chart.
        companies = self.env["res.company"].search([("chart_template", "!=", False)])
        self.assertIn(self.company, companies)
        records = self.env[
            "account.chart.template"
        ]._get_untranslated_translatable_template_model_records(["fr_FR"], companies)
        self.assertTrue(records, "the company's chart has records waiting for a translation")


@tagged("post_install", "-at_install")
class TestLanguageInstallGenericChart(LanguageInstallMixin, BankSyncCompanyCase):
    """A company on Odoo's generic chart adds French with the addon installed."""

    def test_add_french_translates_the_chart_and_the_addon(self):
        journal = self.bank_journal(self.company)
        connection = self.link_to_a_connection(journal)

        self.install_language("fr_FR")

        french = self.env(context={"lang": "fr_FR"})
        # The chart's journal and bank account now read in French (Odoo's own translations).
        self.assertEqual(journal.with_env(french).name, "Banque")
        self.assertEqual(journal.default_account_id.with_env(french).name, "Banque")
        self.assertEqual(journal.name, "Bank")
        # The addon's own terms came with the language (its menus, from i18n/fr.po).
        menu = self.env.ref("bank_sync_aggregator.bank_sync_connection_menu")
        self.assertNotEqual(menu.with_env(french).name, menu.name)
        # The journal still shows its connection's message, in the reader's language.
        self.assertEqual(
            journal.bank_sync_connection_message, "Please confirm your identity at the bank."
        )
        connection.with_context(
            lang="fr_FR"
        ).message = "Confirmez votre identité auprès de la banque."
        self.assertEqual(
            journal.with_env(french).bank_sync_connection_message,
            "Confirmez votre identité auprès de la banque.",
        )

    def test_add_a_second_language(self):
        journal = self.bank_journal(self.company)
        self.link_to_a_connection(journal)
        self.install_language("fr_FR")
        self.install_language("de_DE")
        sales = self.company_data["default_journal_sale"]
        self.assertEqual(sales.with_context(lang="de_DE").name, "Kundenrechnungen")
        # Adding German kept the French names.
        self.assertEqual(journal.with_context(lang="fr_FR").name, "Banque")


@tagged("post_install", "-at_install")
class TestLanguageInstallFrenchChart(LanguageInstallMixin, BankSyncCompanyCase):
    """A company on the French chart (l10n_fr_account) adds French with the addon installed:
    the chart's accounts and journals come in French, as without the addon."""

    chart_template = "fr"

    def test_add_french_translates_the_french_chart(self):
        self.assertEqual(self.company.chart_template, "fr")
        journal = self.bank_journal(self.company)
        self.link_to_a_connection(journal)
        capital = self.env.ref(f"account.{self.company.id}_pcg_1011")
        self.assertEqual(capital.name, "Subscribed capital - uncalled")

        self.install_language("fr_FR")

        french = self.env(context={"lang": "fr_FR"})
        self.assertEqual(capital.with_env(french).name, "Capital souscrit - non appelé")
        self.assertEqual(journal.with_env(french).name, "Banque")
        self.assertEqual(capital.name, "Subscribed capital - uncalled")

from pathlib import Path

import polib

from odoo.tests import TransactionCase, tagged
from odoo.tools.translate import TranslationModuleReader

I18N = Path(__file__).resolve().parent.parent / "i18n"


@tagged("post_install", "-at_install")
class TestTranslations(TransactionCase):
    """Every user-facing text exists in English and in French, and the .pot is current."""

    def _current_terms(self):
        reader = TranslationModuleReader(self.env.cr, modules=["bank_sync_aggregator"])
        return {row[4] for row in reader if row[0] == "bank_sync_aggregator" and row[4]}

    def test_pot_is_up_to_date(self):
        terms = self._current_terms()
        self.assertTrue(terms, "the addon exposes no translatable text at all")
        pot = {entry.msgid for entry in polib.pofile(str(I18N / "bank_sync_aggregator.pot"))}
        missing = sorted(terms - pot)
        self.assertFalse(
            missing,
            f"{len(missing)} terms missing from the .pot (tools/i18n_update.py): {missing[:10]}",
        )

    def test_french_translation_is_complete(self):
        terms = self._current_terms()
        french = {
            entry.msgid: entry.msgstr
            for entry in polib.pofile(str(I18N / "fr.po"))
            if not entry.obsolete and "fuzzy" not in entry.flags
        }
        untranslated = sorted(term for term in terms if not french.get(term))
        self.assertFalse(
            untranslated,
            f"{len(untranslated)} terms without a French translation: {untranslated[:10]}",
        )

from odoo.tests import TransactionCase, tagged


@tagged("post_install", "-at_install")
class TestInstall(TransactionCase):
    def test_package_importable(self):
        """The addon runs against the bank_sync_bridge package it declares."""
        import bank_sync_bridge  # noqa: PLC0415 (importing it is what this test checks)

        self.assertTrue(bank_sync_bridge.__version__)
        self.assertIn("bank_sync_aggregator", self.env.registry._init_modules)

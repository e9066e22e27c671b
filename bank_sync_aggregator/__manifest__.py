{
    "name": "Bank Synchronisation (Bridge, Linxo)",
    "version": "18.0.1.0.0",
    "category": "Accounting/Accounting",
    "summary": "Import bank operations every morning through licensed aggregators "
    "(Bridge, Linxo), exactly once",
    "author": "bank_sync_aggregator contributors",
    "website": "https://github.com/bank-sync-aggregator/bank_sync_aggregator",
    "license": "LGPL-3",
    "depends": ["account", "mail"],
    "external_dependencies": {"python": ["bank_sync_bridge"]},
    "data": [
        "security/bank_sync_security.xml",
        "security/ir.model.access.csv",
        "views/bank_sync_templates.xml",
        # Wizards first: the views below open them (%(...)d buttons need their actions).
        "wizards/bank_sync_connect_wizard_views.xml",
        "wizards/bank_sync_link_wizard_views.xml",
        "wizards/bank_sync_force_wizard_views.xml",
        "wizards/bank_sync_delete_wizard_views.xml",
        "views/account_bank_statement_line_views.xml",
        "views/bank_sync_connection_views.xml",
        "views/bank_sync_account_views.xml",
        "views/bank_sync_provider_views.xml",
        "views/bank_sync_run_views.xml",
        "views/bank_sync_ignored_views.xml",
        "views/bank_sync_webhook_event_views.xml",
        "views/account_journal_views.xml",
        "views/res_config_settings_views.xml",
        "views/menus.xml",
        "data/ir_cron.xml",
        "data/mail_activity_type_data.xml",
        "data/mail_template_data.xml",
    ],
    "assets": {
        "web.assets_backend": [
            "bank_sync_aggregator/static/src/**/*",
        ],
        "web.assets_tests": [
            "bank_sync_aggregator/static/tests/tours/**/*",
        ],
        "web.assets_unit_tests": [
            "bank_sync_aggregator/static/tests/**/*.test.js",
        ],
    },
    "uninstall_hook": "uninstall_hook",
    "installable": True,
    "application": False,
}

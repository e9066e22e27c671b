{
    "name": "Bank Synchronisation: OCA Reconciliation",
    "version": "18.0.1.0.0",
    "category": "Accounting/Accounting",
    "summary": "Synchronised bank lines in OCA's reconciliation widget: no noise among the "
    "candidates, the invoice a line quotes chosen first",
    "author": "bank_sync_aggregator contributors",
    "website": "https://github.com/bank-sync-aggregator/bank_sync_aggregator",
    "license": "LGPL-3",
    "depends": ["bank_sync_aggregator", "account_reconcile_oca"],
    "data": ["views/account_bank_statement_line_views.xml"],
    "assets": {
        "web.assets_tests": [
            "bank_sync_aggregator_reconcile_oca/static/tests/tours/*.js",
        ],
    },
    "auto_install": True,
    "installable": True,
}

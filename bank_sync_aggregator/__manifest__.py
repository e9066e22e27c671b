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
    ],
    "installable": True,
    "application": False,
}

"""Names the models, controllers, views and the engine share: the aggregators, the public
routes, the context of the lines the engine writes."""

#: The aggregators a company can choose from (one at a time): ``bank.sync.provider.kind``.
AGGREGATOR_KINDS = [
    ("sandbox", "Sandbox (demo)"),
    ("bridgeapi", "Bridge"),
    ("linxo", "Linxo"),
    ("bridge_service", "Bridge service"),
]

#: Aggregators that sign nothing (Linxo documents no signature, only TLS and IP filtering): the
#: webhook address registered with them carries the settings' random ``webhook_token``.
URL_TOKEN_KINDS = frozenset({"linxo"})

#: Where every aggregator's hosted page sends the user back (controllers/main.py), followed by
#: the settings' id.
CALLBACK_ROUTE = "/bank_sync/callback"
#: The sandbox's hosted page, served by this Odoo (controllers/main.py).
SANDBOX_HOSTED_ROUTE = "/bank_sync/sandbox/connect"
#: "Try again" after a refused or cancelled bank login: a new visit to the aggregator's page for
#: the same bank, without the consent step again (controllers/main.py).
RETRY_ROUTE = "/bank_sync/retry"
#: Where aggregators post their events, one address per aggregator settings record (each
#: company has its own contract, hence its own webhook secret): controllers/webhook.py.
WEBHOOK_ROUTE = "/bank_sync/webhook"
#: Where a bridge service posts this tenant's events (controllers/bridge_service.py).
EVENTS_CALLBACK_ROUTE = "/bank_sync/bridge_service/events"
#: The alert e-mails' "Reconnect" button, followed by the connection's id
#: (controllers/health.py).
RECONNECT_ROUTE = "/bank_sync/reconnect"

#: Context for the statement lines the engine writes: no chatter message per imported
#: operation (the run record says what happened), which saves about 10 % of the creation time;
#: ``bank_sync_engine``: the run checks the balance itself when it ends (a change made by
#: anyone else is checked at once, account.bank.statement.line._bank_sync_recheck_balance).
LINE_CONTEXT = {
    "tracking_disable": True,
    "mail_create_nolog": True,
    "mail_notrack": True,
    "bank_sync_engine": True,
}

"""The synchronisation engine: not a model, the code behind "Sync now", forced
synchronisations, webhooks' background syncs and the daily import.

Start reading at :func:`.run.sync_connection_accounts` (what
``bank.sync.account._sync_accounts`` calls) and :class:`.run.AccountSynchroniser`, which
imports one account for one run:

- :mod:`.run`: the run lifecycle: the account's lock, its ``bank.sync.run``, the window, the
  stream of pages and the cursor stored with them, closing or failing the run, the daily
  job's batch (:func:`.run.cron_sync`);
- :mod:`.pages`: one page against the journal: lines created, updated, deleted or flagged,
  statements, twins typed by hand, partners;
- :mod:`.balance`: the opening line of a first import, the journal compared with the bank,
  recent weeks read again before a difference alerts.

The decisions (keys, diff, window, twins, balances) are the pure functions of
:mod:`bank_sync_bridge.sync`; these modules read what they need from the database in few
queries and apply the result with batched ORM calls.
"""

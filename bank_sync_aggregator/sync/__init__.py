"""The synchronisation engine: not a model, the code behind ``bank.sync.account._sync_accounts``
and the daily job."""

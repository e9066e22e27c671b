from . import (
    account_bank_statement_line,
    account_journal,
    bank_sync_account,
    bank_sync_connect_session,
    bank_sync_connection,
    bank_sync_ignored,
    bank_sync_provider,
    bank_sync_run,
    bank_sync_token,
    bank_sync_webhook_event,
    res_company,
    res_config_settings,
)

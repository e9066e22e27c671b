from . import (
    bank_sync_connect_wizard,
    bank_sync_delete_wizard,
    bank_sync_force_wizard,
    bank_sync_link_wizard,
)

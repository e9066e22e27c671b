# The mixin first: the wizards below inherit from it, and Odoo builds models in import order.
from . import bank_sync_range_mixin

# isort: split
from . import (
    bank_sync_connect_wizard,
    bank_sync_delete_wizard,
    bank_sync_force_wizard,
    bank_sync_link_all_wizard,
    bank_sync_link_wizard,
    bank_sync_match_wizard,
)

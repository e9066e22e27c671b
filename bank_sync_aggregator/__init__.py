from odoo.tools import SQL

from . import controllers, models, wizards
from .models.account_bank_statement_line import UNPOSTED_MOVE_INDEX


def uninstall_hook(env):
    """Drop what the addon added to tables it does not own (its own columns go with it)."""
    env.cr.execute(SQL("DROP INDEX IF EXISTS %s", SQL.identifier(UNPOSTED_MOVE_INDEX)))

from . import account_bank_statement_line, account_move_line

"""Who may do what: the check every public action of the addon makes first.

Any public method of a model (a name without a leading underscore) can be called over
``/web/dataset/call_kw`` by any logged-in user, portal users included, on any ids: a button
hidden with ``groups=`` protects nothing. So each action checks the caller's right and the
companies of the records it acts on itself, before any ``sudo()``, any write and any call to
an aggregator (the helper of Odoo's ``payment`` module, ``check_rights_on_recordset``, does
the same for payments).

The rights (README, "Who may do what"):

- :data:`ADMINISTRATOR` (Settings): the aggregator's secrets and endpoint, forgetting the
  secrets, the webhook address, the bridge service's callback;
- :data:`ACCOUNTING_MANAGER` of the company: connect, reconnect and delete banks, update them
  from the aggregator, link and unlink journals, Sync now, forced synchronisations, deleting
  imported operations, testing the bridge service;
- :data:`ACCOUNTING_USER` (bookkeepers) of the company: match imported lines with open items,
  confirm a suggested match (:func:`check_can_reconcile`: they must also be allowed to edit
  the lines' journal items, as Odoo asks of whoever reconciles);
- whoever may edit the company's bank statement lines: mark an imported operation reviewed;
- read-only accountants only read.
"""

from odoo.exceptions import AccessError

#: Odoo's Settings group: the only users who may see (hence change) the aggregator's secrets.
ADMINISTRATOR = "base.group_system"
#: Accounting / Administrator: configures and connects the company's banks.
ACCOUNTING_MANAGER = "account.group_account_manager"
#: Invoicing / Billing and above (bookkeepers): match bank lines with invoices and bills,
#: confirm a suggested match.
ACCOUNTING_USER = "account.group_account_invoice"


def check_rights(records, group, companies=None, operation="write"):
    """Refuse with :class:`AccessError` unless the current user may act on ``records``.

    :param records: the records the action works on (may be empty).
    :param group: XML id of the group the action is reserved to, or None when the model's
        access rights decide alone.
    :param companies: the companies the action touches (default: ``records``' own
        ``company_id``, read whatever the user may read); each must be one the user works in
        and has selected (``env.companies``, what the record rules allow too).
    :param operation: the access the user needs on ``records`` (access rights and record
        rules), or None.

    The superuser (scheduled actions, code already running as ``sudo()``) passes.
    """
    env = records.env
    if env.su:
        return
    if group and not env.user.has_group(group):
        raise AccessError(
            env._(
                "You are not allowed to do this: it is reserved to users with the "
                '"%(group)s" access rights.',
                group=env.ref(group).sudo().full_name,
            )
        )
    if operation:
        records.check_access(operation)
    if companies is None:
        companies = records.sudo().company_id
    if companies.sudo() - env.companies.sudo():
        raise AccessError(
            env._(
                "You are not allowed to do this: it concerns a company you do not work in, "
                "or that is not selected in the company switcher."
            )
        )


def check_can_reconcile(lines):
    """Refuse with :class:`AccessError` unless the current user may reconcile the bank
    statement lines ``lines``: an :data:`ACCOUNTING_USER` of their companies who may read them
    and edit their journal items.

    Reconciling a line rewrites its entry (its suspense item gives way to counterparts) and
    reconciles journal items: what Odoo's own access rights give to whoever may edit journal
    items (billing users register payments that reconcile invoices the same way), not to
    read-only accountants, and not in a company the user does not work in. The bank line
    itself (date, amount, label) is not edited.
    """
    check_rights(lines, ACCOUNTING_USER, operation="read")
    lines.move_id.line_ids.check_access("write")

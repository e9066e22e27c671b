"""Helpers shared by the models, wizards, controllers and the synchronisation engine.

- :func:`aggregator_errors`: around every user action that calls an aggregator, the package's
  errors become one :class:`~odoo.exceptions.UserError` in the user's language. The background
  (the daily import, webhooks, health checks) never raises them: it records them on the run or
  the event, with :func:`describe_error` for the words.
- :func:`comes_from_aggregator`: which errors are news about the bank connection.
- :func:`one_by_one`: the loop of the per-company cron jobs (a savepoint and a commit each).
- :func:`in_test_mode`: the one place that knows how Odoo's test runner forbids commits.
- :func:`naive_utc`: an aggregator's aware datetime as Odoo stores it.
"""

import logging
import threading
from contextlib import contextmanager
from datetime import timezone

from odoo.exceptions import UserError

from bank_sync_bridge.errors import BankSyncError, RateLimited, SecretKeyError, SyncPlanError

_logger = logging.getLogger(__name__)

#: ``error_type`` of a run stopped by a 429: it backs off on a path of its own
#: (``bank.sync.account._resume_after_rate_limits``) rather than failing.
RATE_LIMITED = RateLimited.__name__
#: Errors of the package about our own side, not the aggregator's: a window we planned and
#: cannot honour, a key of ours that cannot read a secret.
OWN_ERRORS = (SyncPlanError, SecretKeyError)


def in_test_mode():
    """Whether this thread runs Odoo's tests: the test runner forbids commits and marks its
    thread with ``testing``. Background jobs commit as they go, except then."""
    return getattr(threading.current_thread(), "testing", False)


def one_by_one(records, work, on_failure):
    """For a background job: ``work(record)`` for each of ``records`` in a savepoint of its
    own, committed after it (except in tests), so that one company's broken setup neither
    stops the others nor undoes their work, even if a later one kills the worker;
    ``on_failure(record, error)`` says what failed in the server log. Reports the progress to
    the cron runner; returns what ``work`` returned for the records that succeeded."""
    env = records.env
    results = []
    for done, record in enumerate(records, 1):
        try:
            with env.cr.savepoint():
                results.append(work(record))
        except Exception as error:  # pylint: disable=broad-except
            on_failure(record, error)
        if not in_test_mode():
            env.cr.commit()  # pylint: disable=invalid-commit
        env["ir.cron"]._notify_progress(done=done, remaining=len(records) - done)
    return results


def naive_utc(value):
    """A datetime as Odoo stores it (naive, in UTC), or False."""
    if not value:
        return False
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def comes_from_aggregator(error):
    """Whether ``error`` says something about the bank connection: an error of the package met
    while talking to the aggregator, not one of :data:`OWN_ERRORS`."""
    return isinstance(error, BankSyncError) and not isinstance(error, OWN_ERRORS)


def describe_error(aggregator, error, bank=None):
    """A sentence for people about ``error``, met while talking to ``aggregator`` (a
    ``bank.sync.provider``) about ``bank`` (a name, optional), in the language of
    ``aggregator``'s environment. Never a secret: the package's messages carry none, and an
    unexpected error is only said to be one (its traceback goes to the server log)."""
    env = aggregator.env
    if isinstance(error, UserError):
        return error.args[0]
    if isinstance(error, BankSyncError):
        detail = error.message
    else:
        _logger.exception("Unexpected error from the aggregator %s", aggregator.kind)
        detail = env._("unexpected error, see the server log")
    if bank:
        return env._(
            "%(aggregator)s could not complete the request for %(bank)s: %(detail)s",
            aggregator=aggregator.name,
            bank=bank,
            detail=detail,
        )
    return env._(
        "%(aggregator)s could not complete the request: %(detail)s",
        aggregator=aggregator.name,
        detail=detail,
    )


@contextmanager
def aggregator_errors(aggregator, bank=None):
    """Turn whatever the aggregator's client raises inside the block into a
    :class:`~odoo.exceptions.UserError` that says it in the user's language (see
    :func:`describe_error`); a ``UserError`` raised inside (a message of our own, an access
    error) goes through unchanged. For user actions only::

        with aggregator_errors(aggregator, bank=connection.display_name):
            accounts = aggregator._get_client().list_accounts(connection.remote_id)
    """
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        raise UserError(describe_error(aggregator, error, bank=bank)) from error

import logging
from urllib.parse import urlsplit

from werkzeug.exceptions import NotFound

from odoo import http
from odoo.exceptions import AccessError, UserError
from odoo.http import request

from bank_sync_bridge.errors import BankSyncError

from ..const import CALLBACK_ROUTE, RETRY_ROUTE, SANDBOX_HOSTED_ROUTE
from ..rights import ACCOUNTING_MANAGER

_logger = logging.getLogger(__name__)

CONNECTIONS_URL = "/odoo/action-bank_sync_aggregator.bank_sync_connection_action"
#: The screen that links every account of a new connection at once (its id is the active id).
LINK_ALL_ACTION = "bank_sync_aggregator.bank_sync_link_all_wizard_action"
#: Where each aggregator puts our signed state in its return: Bridge calls it ``context``, the
#: others ``state``. Read before anything is asked of the aggregator.
STATE_PARAMETERS = ("state", "context")
#: The sandbox's login form is a few hundred bytes.
SANDBOX_FORM_MAX_BYTES = 16 * 1024


class BankSyncController(http.Controller):
    # ------------------------------------------------------------------------------------------
    # Return from the aggregator's hosted page
    # ------------------------------------------------------------------------------------------

    @http.route(f"{CALLBACK_ROUTE}/<int:aggregator_id>", type="http", auth="user", methods=["GET"])
    def bank_sync_callback(self, aggregator_id, **params):
        """Where every aggregator sends the user back, with our signed state.

        The state is checked (signature, expiry, database, company, user and their right,
        aggregator) and its session closed before anything else happens, the aggregator
        included; the connection is then read from the aggregator, the callback's own
        parameters being only a hint.
        """
        env = request.env
        try:
            session, result = self._verify_callback(aggregator_id, params)
        except UserError as error:
            return self._result_page(error.args[0], status=400)
        if not result.success:
            if result.connection_id:
                # The aggregator kept the login (e.g. strong authentication still to do):
                # record it with its real state so that "Reconnect" can finish it later.
                try:
                    session._complete(result)
                except (UserError, AccessError) as error:
                    _logger.info("Unfinished connection not recorded: %s", error)
            if not result.connection_id:
                # Nothing kept at the aggregator: the same bank's page again, in one click.
                session.sudo().retry_allowed = True
            return self._result_page(
                self._failure_message(session, result),
                status=200,
                title=session.env._("The bank was not reconnected")
                if session.connection_id
                else session.env._("The bank connection was not completed"),
                retry_session=session if not result.connection_id else None,
            )
        try:
            connection = session._complete(result)
        except (UserError, AccessError) as error:
            return self._result_page(error.args[0], status=200, title=env._("Bank connection"))
        if not session.connection_id and connection.unlinked_account_count:
            # A bank just added: link its accounts in one step, then back to the connection.
            return request.redirect(
                f"{CONNECTIONS_URL}/{connection.id}/action-{LINK_ALL_ACTION}", local=True
            )
        return request.redirect(f"{CONNECTIONS_URL}/{connection.id}", local=True)

    def _verify_callback(self, aggregator_id, params):
        """The closed session and the aggregator's parsed return, or a UserError.

        The state is read from the query, checked and its session closed (single use) before
        the aggregator is asked anything: a forged, replayed or foreign return never reaches
        it, nor makes this Odoo use another company's credentials.
        """
        env = request.env
        invalid = env._("This bank connection link is not valid: start again from Odoo.")
        state = next((params[name] for name in STATE_PARAMETERS if params.get(name)), "")
        session = env["bank.sync.connect.session"]._consume(state)
        if session.provider_id.id != aggregator_id:
            raise UserError(invalid)
        # From here on, act as the user (not sudo) in the company that started the flow.
        session_env = env(context=dict(env.context, allowed_company_ids=[session.company_id.id]))
        session = session.with_env(session_env)
        aggregator = session.provider_id
        try:
            result = aggregator._get_client().complete_connect(params)
        except Exception as error:
            # The query string is untrusted input: whatever breaks the parser is refused.
            _logger.info("Unreadable return from the aggregator %s: %s", aggregator.kind, error)
            raise UserError(
                env._("The aggregator's answer could not be read: start again from Odoo.")
            ) from error
        if result.state != state:
            # The aggregator's own reading of its return disagrees with the state checked.
            raise UserError(invalid)
        return session, result

    def _failure_message(self, session, result):
        env = session.env
        detail = (result.message or result.step or env._("no reason given")).strip()
        # The aggregator's sentence usually ends with its own full stop: do not add a second.
        detail = detail.rstrip(" .")
        aggregator = session.provider_id._get_kind_label()
        if session.connection_id:
            # A reconnect that did not finish leaves the existing connection as it was.
            return env._(
                "%(aggregator)s reports: %(detail)s. Your connection to %(bank)s is unchanged; "
                "you can reconnect it from Odoo at any time.",
                aggregator=aggregator,
                detail=detail,
                bank=session.connection_id.institution_name or env._("your bank"),
            )
        return env._(
            "%(aggregator)s reports: %(detail)s. No bank connection was added; you can start "
            "again from Odoo at any time.",
            aggregator=aggregator,
            detail=detail,
        )

    def _result_page(self, message, status=400, title=None, retry_session=None):
        values = {
            "title": title or request.env._("Bank connection refused"),
            "message": message,
            "back_url": CONNECTIONS_URL,
            "retry_url": RETRY_ROUTE,
            "retry_session_id": retry_session.id if retry_session else False,
        }
        return request.render("bank_sync_aggregator.connect_result_page", values, status=status)

    @http.route(RETRY_ROUTE, type="http", auth="user", methods=["POST"])
    def bank_sync_retry(self, session_id=None, **_params):
        """ "Try again" on the page of a refused or cancelled bank login: a new session at the
        aggregator for the same bank (or the same connection), straight to its page.

        Only the user of the finished session may retry it, as an accounting manager of its
        company (checked again when the new session opens).
        """
        env = request.env
        try:
            finished = env["bank.sync.connect.session"].sudo().browse(int(session_id or 0))
        except ValueError as error:
            raise NotFound() from error
        if not finished.exists() or finished.user_id != env.user or not finished.used_at:
            raise NotFound()
        # Act in the company that started the flow, whichever company is selected meanwhile.
        company_env = env(context=dict(env.context, allowed_company_ids=[finished.company_id.id]))
        try:
            url = finished.with_env(company_env)._retry()
        except (UserError, AccessError) as error:
            return self._result_page(error.args[0], status=400)
        return request.redirect(url, local=False)

    # ------------------------------------------------------------------------------------------
    # The sandbox's hosted page, served by this Odoo (no network, no contract)
    # ------------------------------------------------------------------------------------------

    def _sandbox_aggregator(self, params):
        """The company's sandbox the hosted-page link was made for, or NotFound.

        The page only serves the accounting managers who start a connection; its link must
        send them back to this Odoo's own callback, never elsewhere.
        """
        if not request.env.user.has_group(ACCOUNTING_MANAGER):
            raise NotFound()
        # The link names the aggregator user (database + company) it was made for: serve it
        # with that company's sandbox, whichever company the user has selected meanwhile.
        aggregators = (
            request.env["bank.sync.provider"]
            .sudo()
            .search(
                [
                    ("kind", "=", "sandbox"),
                    ("active", "=", True),
                    ("company_id", "in", request.env.user.company_ids.ids),
                ]
            )
        )
        aggregator = aggregators.filtered(lambda p: p._get_user_ref() == params.get("user"))[:1]
        if not aggregator:
            raise NotFound()
        return aggregator

    def _is_own_callback(self, aggregator, url):
        """Whether ``url`` is this Odoo's callback for ``aggregator`` (same origin and path)."""
        own = urlsplit(aggregator._get_callback_url())
        target = urlsplit(url or "")
        return (target.scheme, target.netloc, target.path) == (own.scheme, own.netloc, own.path)

    def _foreign_callback_page(self, aggregator):
        _logger.warning(
            "Refused a sandbox page for aggregator settings %s: its link leads elsewhere",
            aggregator.id,
        )
        return self._result_page(
            request.env._("This bank connection link does not lead back to this Odoo."),
            status=400,
        )

    @http.route(SANDBOX_HOSTED_ROUTE, type="http", auth="user", methods=["GET"])
    def bank_sync_sandbox_page(self, **query):
        aggregator = self._sandbox_aggregator(query)
        try:
            html = aggregator._get_client().render_hosted_page(query)
        except BankSyncError as error:
            return self._result_page(error.message, status=400)
        if not self._is_own_callback(aggregator, query.get("callback_url")):
            return self._foreign_callback_page(aggregator)
        return request.make_response(html, headers=[("Content-Type", "text/html; charset=utf-8")])

    # The demo bank's login form carries no Odoo CSRF token: its fields are signed by the
    # sandbox, and what protects the flow is the signed, single-use state of the callback.
    @http.route(
        SANDBOX_HOSTED_ROUTE,
        type="http",
        auth="user",
        methods=["POST"],
        csrf=False,
        max_content_length=SANDBOX_FORM_MAX_BYTES,
    )
    def bank_sync_sandbox_submit(self, **form):
        aggregator = self._sandbox_aggregator(form)
        if not self._is_own_callback(aggregator, form.get("callback_url")):
            return self._foreign_callback_page(aggregator)
        try:
            redirect_url = aggregator._get_client().submit_hosted_page(form)
        except BankSyncError as error:
            return self._result_page(error.message, status=400)
        if not self._is_own_callback(aggregator, redirect_url):
            return self._foreign_callback_page(aggregator)
        return request.redirect(redirect_url, local=False)

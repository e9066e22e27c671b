import logging

from werkzeug.exceptions import NotFound

from odoo import http
from odoo.exceptions import AccessError, UserError
from odoo.http import request

from ..models.bank_sync_provider import CALLBACK_ROUTE, SANDBOX_HOSTED_ROUTE
from ..wizards.bank_sync_connect_wizard import aggregator_label

_logger = logging.getLogger(__name__)

CONNECTIONS_URL = "/odoo/action-bank_sync_aggregator.bank_sync_connection_action"


class BankSyncController(http.Controller):
    # ------------------------------------------------------------------------------------------
    # Return from the aggregator's hosted page
    # ------------------------------------------------------------------------------------------

    @http.route(f"{CALLBACK_ROUTE}/<int:provider_id>", type="http", auth="user", methods=["GET"])
    def bank_sync_callback(self, provider_id, **params):
        """Where every aggregator sends the user back, with our signed state.

        The state is checked (signature, expiry, database, company, user, aggregator) and its
        session closed before anything else happens; the connection is then read from the
        aggregator, the callback's own parameters being only a hint.
        """
        env = request.env
        try:
            session, result = self._verify_callback(provider_id, params)
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
            return self._result_page(
                self._failure_message(session, result),
                status=200,
                title=session.env._("The bank was not reconnected")
                if session.connection_id
                else session.env._("The bank connection was not completed"),
            )
        try:
            connection = session._complete(result)
        except (UserError, AccessError) as error:
            return self._result_page(error.args[0], status=200, title=env._("Bank connection"))
        return request.redirect(f"{CONNECTIONS_URL}/{connection.id}", local=True)

    def _verify_callback(self, provider_id, params):
        """The closed session and the aggregator's parsed return, or a UserError."""
        env = request.env
        invalid = env._("This bank connection link is not valid: start again from Odoo.")
        provider = env["bank.sync.provider"].sudo().browse(provider_id).exists()
        if not provider:
            raise UserError(invalid)
        try:
            result = provider._get_provider().complete_connect(params)
        except Exception as error:
            # The query string is untrusted input: whatever breaks the parser is refused.
            _logger.info("Unreadable return from the aggregator %s: %s", provider.kind, error)
            raise UserError(
                env._("The aggregator's answer could not be read: start again from Odoo.")
            ) from error
        session = env["bank.sync.connect.session"]._consume(result.state)
        if session.provider_id.id != provider.id:
            raise UserError(invalid)
        # From here on, act as the user (not sudo) in the company that started the flow.
        session_env = env(context=dict(env.context, allowed_company_ids=[session.company_id.id]))
        return session.with_env(session_env), result

    def _failure_message(self, session, result):
        env = session.env
        detail = (result.message or result.step or env._("no reason given")).strip()
        # The aggregator's sentence usually ends with its own full stop: do not add a second.
        detail = detail.rstrip(" .")
        aggregator = aggregator_label(session.provider_id)
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

    def _result_page(self, message, status=400, title=None):
        values = {
            "title": title or request.env._("Bank connection refused"),
            "message": message,
            "back_url": CONNECTIONS_URL,
        }
        return request.render("bank_sync_aggregator.connect_result_page", values, status=status)

    # ------------------------------------------------------------------------------------------
    # The sandbox's hosted page, served by this Odoo (no network, no contract)
    # ------------------------------------------------------------------------------------------

    def _sandbox_client(self, params):
        # The link names the aggregator user (database + company) it was made for: serve it
        # with that company's sandbox, whichever company the user has selected meanwhile.
        providers = (
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
        provider = providers.filtered(lambda p: p._get_user_ref() == params.get("user"))[:1]
        if not provider:
            raise NotFound()
        return provider._get_provider()

    @http.route(SANDBOX_HOSTED_ROUTE, type="http", auth="user", methods=["GET"])
    def bank_sync_sandbox_page(self, **query):
        from bank_sync_bridge.errors import BankSyncError  # noqa: PLC0415

        try:
            html = self._sandbox_client(query).render_hosted_page(query)
        except BankSyncError as error:
            return self._result_page(error.message, status=400)
        return request.make_response(html, headers=[("Content-Type", "text/html; charset=utf-8")])

    # The demo bank's login form carries no Odoo CSRF token: its fields are signed by the
    # sandbox, and what protects the flow is the signed, single-use state of the callback.
    @http.route(SANDBOX_HOSTED_ROUTE, type="http", auth="user", methods=["POST"], csrf=False)
    def bank_sync_sandbox_submit(self, **form):
        from bank_sync_bridge.errors import BankSyncError  # noqa: PLC0415

        try:
            redirect_url = self._sandbox_client(form).submit_hosted_page(form)
        except BankSyncError as error:
            return self._result_page(error.message, status=400)
        return request.redirect(redirect_url, local=False)

from werkzeug.exceptions import NotFound

from odoo import http
from odoo.exceptions import AccessError, UserError
from odoo.http import request

from ..const import RECONNECT_ROUTE


class BankSyncHealthController(http.Controller):
    @http.route(f"{RECONNECT_ROUTE}/<int:connection_id>", type="http", auth="user")
    def bank_sync_reconnect(self, connection_id):
        """The alert e-mails' button: open the aggregator's page on this same connection.

        A hosted session expires within minutes, so the e-mail links here and the session is
        opened only when the reader clicks, as the reader (accounting managers only).
        """
        env = request.env
        connection = (
            env["bank.sync.connection"].sudo().with_context(active_test=False).browse(connection_id)
        )
        if not connection.exists() or connection.company_id not in env.user.company_ids:
            raise NotFound()
        # Act in the connection's company whatever company the reader last used.
        connection = connection.sudo(False).with_company(connection.company_id)
        try:
            connection.check_access("write")
            action = connection.action_reconnect()
        except (AccessError, UserError) as error:
            return request.render(
                "bank_sync_aggregator.connect_result_page",
                {
                    "title": env._("The bank cannot be reconnected from here"),
                    "message": error.args[0],
                    "back_url": "/odoo/action-bank_sync_aggregator.bank_sync_connection_action",
                },
                status=403 if isinstance(error, AccessError) else 400,
            )
        return request.redirect(action["url"], local=False)

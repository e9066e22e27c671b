"""Helpers shared by the addon tests: the company every test starts from, the connect-flow,
security and settings fixtures, HTML form parsing, and access to the local emulators."""

import json
import re
from html.parser import HTMLParser
from unittest.mock import patch
from urllib.parse import parse_qsl, urlsplit

from odoo import Command
from odoo.addons.account.tests.common import AccountTestInvoicingCommon
from odoo.tests import new_test_user
from odoo.tests.common import _super_send
from odoo.tools import config

from bank_sync_bridge import crypto

MANAGER_GROUPS = "account.group_account_manager,base.group_user"
#: A bookkeeper: Invoicing / Billing, who matches operations but manages no connection.
BOOKKEEPER_GROUPS = "account.group_account_invoice,base.group_user"


class _FormParser(HTMLParser):
    """The first form of a page: its action and its named inputs (as a browser would post)."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}
        self.selects = {}
        self._select = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attrs.get("action") or ""
        elif tag == "input" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""
        elif tag == "select" and attrs.get("name"):
            self._select = attrs["name"]
            self.selects[self._select] = []
        elif tag == "option" and self._select:
            self.selects[self._select].append(attrs.get("value"))

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def parse_form(html):
    """``(action, fields, selects)`` of the first form in ``html``."""
    parser = _FormParser()
    parser.feed(html)
    return parser.action, parser.fields, parser.selects


def load_french(env, everything=False):
    """French active, with this addon's terms (``everything``: every installed module's, as
    after a user installs the language; slower)."""
    env["res.lang"]._activate_lang("fr_FR")
    modules = ["bank_sync_aggregator"]
    if everything:
        modules = env["ir.module.module"].search([("state", "=", "installed")]).mapped("name")
    env["ir.module.module"]._load_module_terms(modules, ["fr_FR"], overwrite=True)


def encryption_keys(keys=None):
    """A patch of Odoo's configuration giving the addon its encryption keys (a new key when
    ``keys`` is None, ``""`` for none at all); start it, or hand it to ``startClassPatcher``."""
    if keys is None:
        keys = crypto.generate_key()
    return patch.dict(config.options, {"bank_sync_encryption_keys": keys})


def company_user(env, login, company, groups=MANAGER_GROUPS, **values):
    """A user of ``company`` only (an accounting manager unless ``groups`` says otherwise)."""
    return new_test_user(
        env,
        login,
        groups=groups,
        company_ids=[Command.set(company.ids)],
        company_id=company.id,
        **values,
    )


#: Where the return from the aggregator sends the user: the connection, then (for a bank just
#: added with accounts to link) the screen linking them all.
CONNECTION_LOCATION = re.compile(
    r"/odoo/action-bank_sync_aggregator\.bank_sync_connection_action/(\d+)"
    r"(/action-bank_sync_aggregator\.bank_sync_link_all_wizard_action)?$"
)


def connection_of(env, location):
    """The connection whose page (or linking screen) ``location`` opens."""
    match = CONNECTION_LOCATION.search(location or "")
    if not match:
        raise AssertionError(f"Not a bank connection's address: {location}")
    return env["bank.sync.connection"].browse(int(match.group(1)))


def query_of(url):
    """The query parameters of ``url`` as a dict."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


#: What a tour's page logs when the browser leaves for the aggregator's hosted page.
LEFT_FOR_THE_AGGREGATOR = "left for the aggregator's page"


def run_tour_until_the_aggregator(case, tour, url, login):
    """Run ``tour`` in the browser of the HttpCase ``case``, from ``url`` as ``login``, until
    the browser leaves for the aggregator's hosted page (not Odoo's web client: no tour goes
    on there)."""
    name = json.dumps(tour)
    options = json.dumps({"startUrl": url, "stepDelay": 0})
    signal = json.dumps(LEFT_FOR_THE_AGGREGATOR)
    case.browser_js(
        url,
        f"window.addEventListener('beforeunload', () => console.log({signal}));"
        f" odoo.startTour({name}, {options})",
        ready=f"odoo.isTourReady({name})",
        login=login,
        timeout=120,
        success_signal=LEFT_FOR_THE_AGGREGATOR,
    )


class LocalEmulatorsMixin:
    """Lets test HTTP calls reach the emulators and services on 127.0.0.1 unchanged.

    The package gives requests a (connect, read) timeout pair, which Odoo's test guard compares
    to a number and stretches to 10 s, hiding the very timeouts the fault tests provoke. Any
    other host is still refused by Odoo's guard.
    """

    @classmethod
    def _request_handler(cls, s, r, /, **kw):
        if urlsplit(r.url).hostname in ("127.0.0.1", "localhost"):
            return _super_send(s, r, **kw)
        return super()._request_handler(s, r, **kw)


class BankSyncCompanyCase(LocalEmulatorsMixin, AccountTestInvoicingCommon):
    """A company with a chart of accounts and books in euros, synchronisation on: what every
    addon test starts from (``cls.company``)."""

    @classmethod
    def setup_independent_company(cls, **kwargs):
        # French-style books: the demo banks' accounts are in euros.
        cls.env.ref("base.EUR").active = True
        return super().setup_independent_company(currency_id=cls.env.ref("base.EUR").id, **kwargs)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company = cls.company_data["company"]
        cls.company.bank_sync_enabled = True


class BankSyncCommon(BankSyncCompanyCase):
    """A French company whose aggregator is the sandbox, chosen as the settings do
    (``cls.aggregator``)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company.country_id = cls.env.ref("base.fr")
        cls.aggregator = cls.company._bank_sync_set_aggregator_kind("sandbox")

    @classmethod
    def _connect_sandbox(cls, aggregator, bank="BNPAFRPP", login="success"):
        """Make a sandbox connection through the package alone (no browser) and record it."""
        client = aggregator._get_client()
        session = client.start_connect(
            callback_url=aggregator._get_callback_url(), state="test", institution_id=bank
        )
        _action, fields, _selects = parse_form(client.render_hosted_page(query_of(session.url)))
        back = client.submit_hosted_page(dict(fields, login=login, action="connect"))
        result = client.complete_connect(query_of(back))
        connection = aggregator._upsert_connection(client.get_connection(result.connection_id))
        connection._upsert_accounts(client.list_accounts(result.connection_id))
        return connection

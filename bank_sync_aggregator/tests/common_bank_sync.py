"""Helpers shared by the addon tests: the company every test starts from, the connect-flow,
security and settings fixtures, HTML form parsing, and access to the local emulators."""

from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlsplit

from odoo.addons.account.tests.common import AccountTestInvoicingCommon
from odoo.tests.common import _super_send


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


def query_of(url):
    """The query parameters of ``url`` as a dict."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


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
    (``cls.provider``)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company.country_id = cls.env.ref("base.fr")
        cls.provider = cls.company._bank_sync_set_provider_kind("sandbox")

    @classmethod
    def _connect_sandbox(cls, provider, bank="BNPAFRPP", login="success"):
        """Make a sandbox connection through the package alone (no browser) and record it."""
        client = provider._get_provider()
        session = client.start_connect(
            callback_url=provider._get_callback_url(), state="test", institution_id=bank
        )
        _action, fields, _selects = parse_form(client.render_hosted_page(query_of(session.url)))
        back = client.submit_hosted_page(dict(fields, login=login, action="connect"))
        result = client.complete_connect(query_of(back))
        connection = provider._upsert_connection(client.get_connection(result.connection_id))
        connection._upsert_accounts(client.list_accounts(result.connection_id))
        return connection

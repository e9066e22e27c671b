import unicodedata

from odoo import api, fields, models
from odoo.exceptions import UserError

from ..rights import ACCOUNTING_MANAGER, check_rights
from ..utils import aggregator_errors

#: How many banks the picker shows at once (the search box narrows the rest).
INSTITUTION_LIMIT = 50
#: How many of the most requested banks are highlighted.
MOST_REQUESTED_COUNT = 8


def _fold(text):
    """Lower case without accents, so that "societe" finds "Société Générale"."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


class BankSyncConnectWizard(models.TransientModel):
    """Add a bank: consent, bank picker, then the aggregator's hosted page."""

    _name = "bank.sync.connect.wizard"
    _description = "Add a Bank Connection"

    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company
    )
    provider_id = fields.Many2one(
        "bank.sync.provider",
        string="Aggregator",
        required=True,
        readonly=True,
        default=lambda self: self.env.company._get_bank_sync_aggregator(),
    )
    # The aggregator as users know it, in their language ("Bac à sable (démo)"), not the
    # settings record's name, which is stored once in the language of whoever created it.
    provider_name = fields.Char(compute="_compute_provider_name", string="Aggregator label")
    step = fields.Selection([("consent", "Consent"), ("bank", "Bank")], default="consent")
    accept_terms = fields.Boolean(string="I have read and accept the aggregator's terms")
    allow_transfer = fields.Boolean(
        string="I authorise the aggregator to transfer my account data to this Odoo"
    )
    terms_url = fields.Char(related="provider_id.terms_url")
    country_id = fields.Many2one("res.country", default=lambda self: self.env.company.country_id)
    search = fields.Char(string="Search a bank")
    line_ids = fields.One2many("bank.sync.connect.wizard.line", "wizard_id", string="Banks")
    # The most requested banks, shown above the full list when nothing is searched (as the
    # aggregators' own pickers do).
    # What the aggregator was last asked for (the Search button); the lines are its answer.
    loaded_search = fields.Char(readonly=True)
    shown_line_ids = fields.One2many(
        "bank.sync.connect.wizard.line", compute="_compute_shown_line_ids", string="All banks"
    )
    top_line_ids = fields.One2many(
        "bank.sync.connect.wizard.line", compute="_compute_top_line_ids", string="Most requested"
    )

    @api.model
    def default_get(self, fields_list):
        # Refuse before the consent step: nothing can be connected while the company's
        # synchronisation is off, and the user must learn where to switch it on.
        company = self.env.company
        if not company.bank_sync_enabled:
            raise UserError(
                self.env._(
                    "Bank synchronisation is switched off for %(company)s. An administrator "
                    "can switch it on in Settings > Invoicing, section Bank synchronisation; "
                    "then add your bank.",
                    company=company.display_name,
                )
            )
        return super().default_get(fields_list)

    @api.depends("provider_id.kind")
    @api.depends_context("lang")
    def _compute_provider_name(self):
        for wizard in self:
            wizard.provider_name = wizard.provider_id._get_kind_label()

    @api.depends("line_ids.most_requested")
    def _compute_top_line_ids(self):
        for wizard in self:
            wizard.top_line_ids = wizard.line_ids.filtered("most_requested")

    @api.depends("line_ids", "search", "loaded_search")
    def _compute_shown_line_ids(self):
        # Enter in the search box filters the banks already loaded at once (an onchange
        # cannot load new lines: the list's Choose buttons only work on saved lines); the
        # Search button asks the aggregator, whose answer is then shown as is.
        for wizard in self:
            words = _fold(wizard.search or "").split()
            if not words or (wizard.search or "").strip() == (wizard.loaded_search or ""):
                wizard.shown_line_ids = wizard.line_ids
                continue
            wizard.shown_line_ids = wizard.line_ids.filtered(
                lambda line, words=words: all(
                    word in _fold(f"{line.name} {line.group_name or ''} {line.remote_id}")
                    for word in words
                )
            )

    # -------------------------------------------------------------------------
    # Actions
    # -------------------------------------------------------------------------

    def action_next(self):
        """Check the consent, then show the banks."""
        self.ensure_one()
        self._check_rights()
        if not (self.accept_terms and self.allow_transfer):
            raise UserError(
                self.env._(
                    "Tick both boxes to go on: %(aggregator)s needs your consent to read your "
                    "accounts and to transfer their data to Odoo.",
                    aggregator=self.provider_id._get_kind_label(),
                )
            )
        self._load_institutions()
        self.step = "bank"
        return self._reopen()

    def action_search(self):
        self.ensure_one()
        self._check_rights()
        self._load_institutions()
        return self._reopen()

    def action_skip_bank(self):
        """Let the user pick the bank on the aggregator's own page."""
        self.ensure_one()
        self._check_rights()
        return self._start(institution_id=None)

    # -------------------------------------------------------------------------
    # Business
    # -------------------------------------------------------------------------

    def _check_rights(self):
        """Accounting managers of the aggregator's company connect its banks."""
        wizard = self.sudo()
        check_rights(self, ACCOUNTING_MANAGER, wizard.company_id | wizard.provider_id.company_id)

    def _start(self, institution_id):
        self.ensure_one()
        if not (self.accept_terms and self.allow_transfer):
            raise UserError(self.env._("Your consent is needed before connecting a bank."))
        url = self.env["bank.sync.connect.session"]._open(
            self.provider_id, institution_id=institution_id
        )
        return {"type": "ir.actions.act_url", "url": url, "target": "self"}

    def _load_institutions(self):
        self.ensure_one()
        if not self.provider_id:
            raise UserError(
                self.env._(
                    "Choose an aggregator in the Accounting settings (Bank synchronisation) "
                    "before adding a bank."
                )
            )
        search = (self.search or "").strip()
        with aggregator_errors(self.provider_id):
            client = self.provider_id._get_client()
            institutions = client.list_institutions(
                search=search, country=self.country_id.code or None, limit=INSTITUTION_LIMIT
            )
            if not institutions and not search and self.country_id:
                # No bank offered in that country: show what the aggregator has rather than
                # an empty list.
                institutions = client.list_institutions(limit=INSTITUTION_LIMIT)
        self.loaded_search = search
        # Most requested first whatever the aggregator's order; a stable sort keeps its order
        # among equals.
        ranked = sorted(institutions, key=lambda inst: -inst.popularity)
        self.line_ids = [fields.Command.clear()] + [
            fields.Command.create(
                {
                    "sequence": index,
                    "remote_id": institution.remote_id,
                    "name": institution.name,
                    "group_name": institution.group_name or False,
                    "country_code": institution.country or False,
                    "logo_url": institution.logo_url or False,
                    "most_requested": index < MOST_REQUESTED_COUNT
                    and not self.search
                    and institution.popularity > 0,
                }
            )
            for index, institution in enumerate(ranked)
        ]

    def _reopen(self):
        return {
            "type": "ir.actions.act_window",
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "target": "new",
            "name": self.env._("Add a bank"),
        }


class BankSyncConnectWizardLine(models.TransientModel):
    _name = "bank.sync.connect.wizard.line"
    _description = "Bank Offered by the Aggregator"
    _order = "sequence, id"

    wizard_id = fields.Many2one("bank.sync.connect.wizard", required=True, ondelete="cascade")
    sequence = fields.Integer()
    remote_id = fields.Char(required=True)
    name = fields.Char(string="Bank name", required=True)
    group_name = fields.Char(string="Group")
    # What the search matched when it was not the name ("Boursorama Banque" for "societe"):
    # the bank's group, shown next to the name.
    display_label = fields.Char(string="Bank", compute="_compute_display_label")
    country_code = fields.Char(string="Country")
    logo_url = fields.Char()
    most_requested = fields.Boolean()

    @api.depends("name", "group_name")
    def _compute_display_label(self):
        for line in self:
            if line.group_name and line.group_name.casefold() not in line.name.casefold():
                line.display_label = self.env._(
                    "%(bank)s (%(group)s group)", bank=line.name, group=line.group_name
                )
            else:
                line.display_label = line.name

    def action_choose(self):
        self.ensure_one()
        self.wizard_id._check_rights()
        return self.wizard_id._start(institution_id=self.remote_id)

/** @odoo-module **/

import { registry } from "@web/core/registry";

// OCA's reconciliation widget, as tests/test_reconcile_widget.py opens it on a journal whose
// synchronised line pays part of the invoice it quotes: the line opens with that invoice
// already chosen, and the enabled Reconcile button settles it.
registry.category("web_tour.tours").add("bank_sync_oca_quoted_invoice_chosen", {
    steps: () => [
        {
            content: "Open the synchronised line that quotes the invoice",
            trigger: ".o_kanban_record:contains(ACOMPTE)",
            run: "click",
        },
        {
            content: "The invoice it quotes is already chosen, for what the line pays",
            trigger: "tr.o_reconcile_widget_line.other:contains(INV/):contains(80.00)",
        },
        {
            content: "Nothing is left to choose: Reconcile is enabled",
            trigger: ".o_statusbar_buttons button[name=reconcile_bank_line]:not(.disabled)",
            run: "click",
        },
        {
            content: "The line is reconciled",
            trigger: ".o_statusbar_buttons button[name=unreconcile_bank_line]",
        },
    ],
});

/** @odoo-module **/

import { registry } from "@web/core/registry";

// An accountant's day, in French, as tests/test_french_day.py runs it: each step waits for
// the words the user reads. The bank's hosted login page is not Odoo's web client: the
// "add a bank" tour ends when the browser leaves for it, the Python test logs in there and
// the next tour starts where the bank sends the user back (the screen linking the accounts).

const SETTINGS_URL = "/odoo/action-account.action_account_config";
const ACCOUNTS_URL = "/odoo/action-bank_sync_aggregator.bank_sync_account_action";
const enabledBox = ".o_field_widget[name=bank_sync_enabled] input";

/** dd/mm/yyyy (French dates) of ``days`` ago, never before the 1st of January (the history
 * start the linking screen proposes). */
function frenchDateDaysAgo(days) {
    const today = new Date();
    const newYear = new Date(today.getFullYear(), 0, 1);
    const day = new Date(Math.max(today.getTime() - days * 86400000, newYear.getTime()));
    const pad = (number) => String(number).padStart(2, "0");
    return `${pad(day.getDate())}/${pad(day.getMonth() + 1)}/${day.getFullYear()}`;
}

function goTo(url, content) {
    return {
        content,
        trigger: "body",
        run() {
            window.location.href = url;
        },
    };
}

/** Save the settings and wait for the page they reload (a marker on the page before). */
function saveSettings() {
    return [
        {
            content: "Mark the page before saving",
            trigger: "body",
            run() {
                document.body.classList.add("o_bank_sync_before_save");
            },
        },
        {
            content: "Save the settings",
            trigger: ".o_form_button_save:contains(Enregistrer)",
            run: "click",
        },
        {
            content: "The settings are saved and shown again",
            trigger: "body:not(.o_bank_sync_before_save) .o_setting_box:contains(Synchronisation bancaire)",
            timeout: 20000,
        },
    ];
}

function notification(text) {
    return {
        content: `The notification says: ${text}`,
        trigger: `.o_notification:contains(${text})`,
    };
}

registry.category("web_tour.tours").add("bank_sync_fr_settings_on", {
    steps: () => [
        {
            content: "The Accounting settings show the bank synchronisation block",
            trigger: ".o_setting_box:contains(Synchronisation bancaire)",
        },
        {
            content: "Switch bank synchronisation on",
            trigger: `${enabledBox}:not(:checked)`,
            run: "click",
        },
        {
            content: "The sandbox is the aggregator proposed",
            trigger: ".o_field_widget[name=bank_sync_provider_kind]:contains(Bac à sable (démo))",
        },
        ...saveSettings(),
        {
            content: "Synchronisation is on",
            trigger: `${enabledBox}:checked`,
        },
        {
            content: "The bank connections are one click away",
            trigger: ".o_setting_box button:contains(Connexions bancaires)",
        },
    ],
});

const allBanks = ".modal div[name=shown_line_ids]";

registry.category("web_tour.tours").add("bank_sync_fr_add_bank", {
    steps: () => [
        {
            content: "Add a bank from the bank connections",
            trigger: ".o_control_panel button:contains(Ajouter une banque)",
            run: "click",
        },
        {
            content: "The consent step explains the aggregator",
            trigger: ".modal h3:contains(Synchronisez vos comptes bancaires)",
        },
        {
            content: "Accept the aggregator's terms",
            trigger: ".modal div[name=accept_terms] input",
            run: "check",
        },
        {
            content: "Allow the transfer of the accounts' data",
            trigger: ".modal div[name=allow_transfer] input",
            run: "check",
        },
        {
            content: "Next step",
            trigger: ".modal button[name=action_next]:contains(Étape suivante)",
            run: "click",
        },
        {
            content: "The bank picker asks to choose the bank",
            trigger: ".modal h3:contains(Choisissez votre banque)",
        },
        {
            content: "Search crédit",
            trigger: ".modal div[name=search] input",
            run: "edit crédit",
        },
        {
            content: "Enter filters the banks",
            trigger: ".modal div[name=search] input",
            run: "press Enter",
        },
        {
            content: "Only the banks named Crédit are left",
            trigger: `${allBanks}:contains(Crédit Mutuel):not(:contains(BNP Paribas))`,
        },
        {
            content: "Choose Crédit Agricole",
            trigger: `${allBanks} .o_data_row:contains(Crédit Agricole) button[name=action_choose]:contains(Choisir)`,
            run: "click",
        },
        {
            content: "The aggregator's hosted page opens",
            trigger: "body",
            timeout: 20000,
            // Never resolves: the page unloads meanwhile, or the step times out and fails.
            run: () => new Promise(() => {}),
        },
    ],
});

const loanRow = "div[name=line_ids] .o_data_row:contains(Prêt professionnel équipement)";

registry.category("web_tour.tours").add("bank_sync_fr_link_all", {
    steps: () => [
        {
            content: "Back from the bank: one screen links every account",
            trigger: ".o_form_view h1:contains(Rattacher les comptes de):contains(Crédit Agricole)",
        },
        {
            content: "The current account gets a new journal named after the bank",
            trigger:
                "div[name=line_ids] .o_data_row:contains(Compte courant professionnel):contains(Un nouveau journal):contains(Crédit Agricole - Compte courant professionnel)",
        },
        {
            content: "Open the loan's choice",
            trigger: `${loanRow} td[name=choice]`,
            run: "click",
        },
        {
            content: "Do not synchronise the loan",
            trigger: `${loanRow} td[name=choice] select`,
            run: 'select "skip"',
        },
        {
            content: "The loan will not be synchronised",
            trigger: `${loanRow}:contains(Ne pas synchroniser)`,
        },
        {
            content: "Link the accounts",
            trigger: ".o_form_view button[name=action_link_all]:contains(Rattacher les comptes)",
            run: "click",
        },
        notification("3 compte(s) rattaché(s). La première synchronisation a démarré"),
        {
            content: "Back on the connection: the current account is linked to its journal",
            trigger:
                ".o_form_view div[name=account_ids] .o_data_row:contains(Compte courant professionnel):contains(Crédit Agricole - Compte courant professionnel)",
        },
        {
            content: "The loan can still be linked on its own",
            trigger:
                ".o_form_view div[name=account_ids] .o_data_row:contains(Prêt professionnel équipement) button[name=action_open_link_wizard]:contains(Rattacher)",
        },
    ],
});

const checkingRow = ".o_data_row:contains(Compte courant professionnel)";

registry.category("web_tour.tours").add("bank_sync_fr_day", {
    steps: () => [
        {
            content: "The connection of Crédit Agricole",
            trigger: ".o_form_view h1:contains(Crédit Agricole)",
        },
        {
            content: "See its synchronisations",
            trigger: ".o_form_view button[name=action_view_runs]:contains(Synchronisations)",
            run: "click",
        },
        {
            content: "The first import is done",
            trigger: `.o_list_view ${checkingRow}:contains(Terminée)`,
        },
        {
            content: "Back to the connection",
            trigger: ".o_breadcrumb .breadcrumb-item a:contains(Crédit Agricole)",
            run: "click",
        },
        {
            content: "Sync now",
            trigger: ".o_form_view button[name=action_sync_now]:contains(Synchroniser maintenant)",
            run: "click",
        },
        notification("Synchronisation bancaire"),
        goTo(ACCOUNTS_URL, "The synchronised accounts"),
        {
            content: "Open the current account",
            trigger: `.o_list_view ${checkingRow} td[name=name]`,
            run: "click",
        },
        {
            content: "Force a synchronisation",
            trigger: ".o_form_view button:contains(Forcer une synchronisation)",
            run: "click",
        },
        {
            content: "From a few weeks ago",
            trigger: ".modal div[name=date_from] input",
            run: `edit ${frenchDateDaysAgo(30)}`,
        },
        {
            content: "Leave the date",
            trigger: ".modal .modal-title:contains(Forcer une synchronisation)",
            run: "click",
        },
        {
            content: "Synchronise the range",
            trigger: ".modal button[name=action_force]:contains(Synchroniser)",
            run: "click",
        },
        notification("Synchronisation bancaire"),
        {
            content: "Delete operations",
            trigger: ".o_form_view button:contains(Supprimer les opérations)",
            run: "click",
        },
        {
            content: "From a few weeks ago",
            trigger: ".modal div[name=date_from] input",
            run: `edit ${frenchDateDaysAgo(30)}`,
        },
        {
            content: "Leave the date",
            trigger: ".modal .modal-title:contains(Supprimer des opérations importées)",
            run: "click",
        },
        {
            content: "Ignore them permanently",
            trigger: ".modal div[name=ignore_permanently] input",
            run: "check",
        },
        {
            content: "The dialog says what will be deleted, and never imported again",
            trigger:
                ".modal .alert-warning:contains(opération(s) en attente de rapprochement seront supprimées):contains(Elles ne seront plus jamais importées)",
        },
        {
            content: "Delete",
            trigger: ".modal button[name=action_delete]:contains(Supprimer)",
            run: "click",
        },
        notification("opération(s) supprimée(s)"),
        goTo(SETTINGS_URL, "Back to the Accounting settings"),
        {
            content: "Switch bank synchronisation off",
            trigger: `${enabledBox}:checked`,
            run: "click",
        },
        {
            content: "The settings say what switching off keeps",
            trigger:
                ".o_setting_box:contains(Désactiver la synchronisation arrête tous les imports)",
        },
        ...saveSettings(),
        {
            content: "Synchronisation is off",
            trigger: `${enabledBox}:not(:checked)`,
        },
    ],
});

registry.category("web_tour.tours").add("bank_sync_fr_bookkeeper", {
    steps: () => [
        {
            content: "The bank journal's card on the accounting dashboard",
            trigger:
                ".o_kanban_record:contains(Banque Crédit Agricole) div[name=bank_sync_status]:contains(Dernière synchronisation)",
        },
        {
            content: "The card offers the lines to reconcile",
            trigger: ".o_kanban_record:contains(Banque Crédit Agricole) a:contains(ligne(s) à rapprocher)",
        },
        {
            content: "Its synchronisation history",
            trigger: ".o_kanban_record:contains(Banque Crédit Agricole) a:contains(Historique)",
            run: "click",
        },
        {
            content: "The imports of the morning are done",
            trigger: ".o_list_view .o_data_row:contains(Terminée)",
        },
        goTo(
            "/odoo/action-bank_sync_aggregator.account_bank_statement_line_action_bank_sync_review",
            "The operations to review"
        ),
        {
            content: "The operation the bank changed is listed for review",
            trigger: ".o_list_view .o_data_row:contains(VIREMENT MODIFIE PAR LA BANQUE)",
        },
        {
            content: "Under its French title",
            trigger: ".o_breadcrumb:contains(Opérations à vérifier)",
        },
    ],
});

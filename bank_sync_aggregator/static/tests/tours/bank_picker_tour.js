/** @odoo-module **/

import { registry } from "@web/core/registry";

// The tours start on Accounting > Configuration > Bank Connections and end when the chosen
// bank sends the browser to the aggregator's hosted page, which is not Odoo's web client: the
// Python test waits for that departure and checks which bank the session was opened for.

// The two lists of the bank step.
const mostRequested = ".modal div[name=top_line_ids]";
const allBanks = ".modal div[name=shown_line_ids]";

function goToTheBankStep() {
    return [
        {
            content: "Add a bank",
            trigger: ".o_control_panel button:contains(Add a bank)",
            run: "click",
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
            content: "Go to the banks",
            trigger: ".modal button[name=action_next]",
            run: "click",
        },
    ];
}

function leaveForTheAggregator() {
    return {
        content: "The aggregator's hosted page opens",
        trigger: "body",
        timeout: 20000,
        // Never resolves: the page unloads meanwhile, or the step times out and fails.
        run: () => new Promise(() => {}),
    };
}

registry.category("web_tour.tours").add("bank_sync_picker_click_bank_name", {
    steps: () => [
        ...goToTheBankStep(),
        {
            content: "Click the name of a bank of the full list, not its Choose button",
            trigger: `${allBanks} td[name=display_label]:contains(Qonto)`,
            run: "click",
        },
        leaveForTheAggregator(),
    ],
});

// A most requested bank's row, reached from the keyboard.
const postaleRow = `${mostRequested} .o_data_row:contains(La Banque Postale)`;

registry.category("web_tour.tours").add("bank_sync_picker_enter_on_bank_row", {
    steps: () => [
        ...goToTheBankStep(),
        {
            content: "Focus the Choose button of a most requested bank, as Tab does",
            trigger: `${postaleRow} button[name=action_choose]`,
            run() {
                this.anchor.focus();
            },
        },
        {
            content: "Arrow left to its name",
            trigger: `${postaleRow} button[name=action_choose]:focus`,
            run: "press ArrowLeft",
        },
        {
            content: "Enter on the bank's name",
            trigger: `${postaleRow} td[name=display_label]:focus`,
            run: "press Enter",
        },
        leaveForTheAggregator(),
    ],
});

registry.category("web_tour.tours").add("bank_sync_picker_choose_button", {
    steps: () => [
        ...goToTheBankStep(),
        {
            content: "Click the Choose button of a bank, as before",
            trigger: `${allBanks} .o_data_row:contains(Shine) button[name=action_choose]`,
            run: "click",
        },
        leaveForTheAggregator(),
    ],
});

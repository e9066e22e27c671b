/** @odoo-module **/

import { getActiveHotkey } from "@web/core/hotkeys/hotkey_service";
import { registry } from "@web/core/registry";
import { pick } from "@web/core/utils/objects";
import { X2ManyField, x2ManyField } from "@web/views/fields/x2many/x2many_field";
import { ListRenderer } from "@web/views/list/list_renderer";

/**
 * The "Add a bank" picker's list: a click anywhere on a bank's row, or Enter on one of its
 * cells, chooses that bank, as its Choose button does. The row runs that very button (the
 * list's `action_choose` button, through the view's button handler), so the server method
 * stays the one place where choosing is decided.
 */
export class BankPickerListRenderer extends ListRenderer {
    /** The name of the row button that a click on the row runs. */
    static rowButtonName = "action_choose";

    setup() {
        super.setup();
        // A second click while the first one is being answered must not open a second
        // session at the aggregator (the Choose buttons are disabled meanwhile, rows are not).
        this.choosing = false;
    }

    /** The list's Choose button, as parsed from the view (undefined when it has none). */
    get rowButton() {
        const name = this.constructor.rowButtonName;
        for (const column of this.props.archInfo.columns) {
            const button = (column.buttons || []).find((b) => b.clickParams.name === name);
            if (button) {
                return button;
            }
        }
        return undefined;
    }

    getRowClass(record) {
        return `${super.getRowClass(record)} o_bank_sync_picker_row`;
    }

    /** Any cell but the buttons' (they run themselves): choose the row's bank. */
    async onCellClicked(record, column, ev) {
        if (ev.target.special_click) {
            return; // a widget in the cell handled the click
        }
        await this.chooseRecord(record);
    }

    /**
     * Enter on a focused cell chooses its bank. Elements that answer Enter themselves keep
     * it (the Choose button, an input); the read-only star's link (pe-none) is not one: there
     * Enter would toggle the star instead.
     */
    onCellKeydown(ev, group = null, record = null) {
        if (
            record &&
            getActiveHotkey(ev) === "enter" &&
            !ev.target.closest("button, input, textarea, select, a[href]:not(.pe-none)")
        ) {
            ev.preventDefault();
            ev.stopPropagation();
            this.chooseRecord(record);
            return;
        }
        return super.onCellKeydown(ev, group, record);
    }

    /** Run the row's Choose button for `record`, as clicking it would. */
    async chooseRecord(record) {
        const button = this.rowButton;
        if (
            this.choosing ||
            !button ||
            button.disabled ||
            this.evalInvisible(button.invisible, record)
        ) {
            return;
        }
        if (record.isNew) {
            // As the list's buttons do: an unsaved line has nothing to run a method on.
            this.displaySaveNotification();
            return;
        }
        this.choosing = true;
        try {
            await this.env.onClickViewButton({
                clickParams: button.clickParams,
                getResParams: () =>
                    pick(record, "context", "evalContext", "resModel", "resId", "resIds"),
            });
        } finally {
            this.choosing = false;
        }
    }
}

export class BankPickerField extends X2ManyField {
    static components = {
        ...X2ManyField.components,
        ListRenderer: BankPickerListRenderer,
    };
}

export const bankPickerField = {
    ...x2ManyField,
    component: BankPickerField,
    additionalClasses: ["o_field_one2many"],
};

registry.category("fields").add("bank_sync_bank_picker", bankPickerField);

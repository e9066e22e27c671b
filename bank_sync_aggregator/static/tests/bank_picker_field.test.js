import { describe, expect, test } from "@odoo/hoot";
import { press } from "@odoo/hoot-dom";
import { Deferred, animationFrame } from "@odoo/hoot-mock";
import { mailModels } from "@mail/../tests/mail_test_helpers";
import {
    contains,
    defineModels,
    fields,
    mockService,
    models,
    mountView,
} from "@web/../tests/web_test_helpers";

class ConnectWizard extends models.Model {
    _name = "bank.sync.connect.wizard";

    line_ids = fields.One2many({
        relation: "bank.sync.connect.wizard.line",
        relation_field: "wizard_id",
    });

    _records = [{ id: 1, line_ids: [1, 2, 3] }];
}

class ConnectWizardLine extends models.Model {
    _name = "bank.sync.connect.wizard.line";

    wizard_id = fields.Many2one({ relation: "bank.sync.connect.wizard" });
    name = fields.Char();
    most_requested = fields.Boolean();
    unavailable = fields.Boolean();

    _records = [
        { id: 1, wizard_id: 1, name: "BNP Paribas", most_requested: true },
        { id: 2, wizard_id: 1, name: "Qonto" },
        { id: 3, wizard_id: 1, name: "Closed bank", unavailable: true },
    ];
}

// The addon depends on mail, whose services the web client starts: they need its models.
defineModels({ ...mailModels, ConnectWizard, ConnectWizardLine });

describe.current.tags("desktop");

// The picker as the wizard shows it: read-only lines, each with its Choose button.
const arch = `
    <form>
        <field name="line_ids" widget="bank_sync_bank_picker" readonly="1">
            <list no_open="1">
                <field name="name"/>
                <field name="most_requested" widget="boolean_favorite" readonly="1"/>
                <button name="action_choose" type="object" string="Choose"
                        invisible="unavailable"/>
                <field name="unavailable" column_invisible="1"/>
            </list>
        </field>
    </form>`;

/** Mount the picker; return the buttons the web client was asked to run, as [name, id]. */
async function mountPicker({ answer } = {}) {
    const ran = [];
    mockService("action", {
        doActionButton(params) {
            ran.push([params.name, params.resId]);
            return answer;
        },
    });
    await mountView({ type: "form", resModel: "bank.sync.connect.wizard", resId: 1, arch });
    return ran;
}

const row = (name) => `.o_data_row:contains(${name})`;

test("a click on a bank's name runs that row's Choose button", async () => {
    const ran = await mountPicker();
    expect(".o_bank_sync_picker_row").toHaveCount(3);
    await contains(`${row("Qonto")} td[name=name]`).click();
    expect(ran).toEqual([["action_choose", 2]]);
});

test("a click elsewhere on the row (the star) chooses the bank too", async () => {
    const ran = await mountPicker();
    await contains(`${row("BNP Paribas")} td[name=most_requested]`).click();
    expect(ran).toEqual([["action_choose", 1]]);
});

test("the Choose button still runs, once", async () => {
    const ran = await mountPicker();
    await contains(`${row("Qonto")} button[name=action_choose]`).click();
    expect(ran).toEqual([["action_choose", 2]]);
});

test("Enter on a focused name chooses the bank", async () => {
    const ran = await mountPicker();
    // From the Choose button (where Tab leads), arrow left over the star to the name.
    await contains(`${row("Qonto")} button[name=action_choose]`).focus();
    await press("ArrowLeft");
    await press("ArrowLeft");
    await animationFrame();
    expect(`${row("Qonto")} td[name=name]`).toBeFocused();
    await press("Enter");
    await animationFrame();
    expect(ran).toEqual([["action_choose", 2]]);
});

test("Enter on the read-only star chooses the bank and leaves the star as it is", async () => {
    const ran = await mountPicker();
    await contains(`${row("Qonto")} button[name=action_choose]`).focus();
    await press("ArrowLeft");
    await animationFrame();
    expect(`${row("Qonto")} td[name=most_requested] a`).toBeFocused();
    await press("Enter");
    await animationFrame();
    expect(ran).toEqual([["action_choose", 2]]);
    expect(`${row("Qonto")} td[name=most_requested] .fa-star-o`).toHaveCount(1);
});

test("Enter on the Choose button runs it once", async () => {
    const ran = await mountPicker();
    await contains(`${row("Qonto")} button[name=action_choose]`).focus();
    await press("Enter");
    await animationFrame();
    expect(ran).toEqual([["action_choose", 2]]);
});

test("a row without a Choose button chooses nothing", async () => {
    const ran = await mountPicker();
    await contains(`${row("Closed bank")} td[name=name]`).click();
    expect(ran).toEqual([]);
});

test("a second click while the first choice is answered chooses nothing more", async () => {
    const answer = new Deferred();
    const ran = await mountPicker({ answer });
    await contains(`${row("Qonto")} td[name=name]`).click();
    await contains(`${row("BNP Paribas")} td[name=name]`).click();
    expect(ran).toEqual([["action_choose", 2]]);
    answer.resolve();
    await animationFrame();
    await contains(`${row("BNP Paribas")} td[name=name]`).click();
    expect(ran).toEqual([
        ["action_choose", 2],
        ["action_choose", 1],
    ]);
});

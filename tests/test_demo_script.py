"""The parts of ``tools/demo.py`` (``make demo``) that need no database: how it reads the
sandbox's hosted page like a browser, how it reports a page, and that it refuses to touch the
test template. The whole demo runs in about a minute and a half on Odoo: ``make demo``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from bank_sync_bridge.providers.base import MemoryTokenStore, ProviderConfig
from bank_sync_bridge.providers.sandbox import SandboxProvider

DEMO_PATH = Path(__file__).resolve().parent.parent / "tools" / "demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("bank_sync_demo_script", DEMO_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def test_the_login_form_read_from_the_hosted_page_is_accepted_by_the_sandbox(demo):
    sandbox = SandboxProvider(
        ProviderConfig(user_ref="demo-test", options={"seed": 3}), token_store=MemoryTokenStore()
    )
    session = sandbox.start_connect(
        callback_url="http://127.0.0.1:8069/bank_sync/callback/1",
        state="signed-state",
        institution_id="BNPAFRPP",
    )
    html = sandbox.render_hosted_page(_query(session.url))

    action, fields = demo.parse_first_form(html)

    assert action == ""  # posts back to the page's own URL
    assert fields["state"] == "signed-state"
    assert fields["institution_id"] == "BNPAFRPP"
    fields.update(login="success", password="x", action="connect")
    back = sandbox.submit_hosted_page(fields)
    result = sandbox.complete_connect(_query(back))
    assert result.success
    assert result.state == "signed-state"
    assert result.connection_id.startswith("sbx-BNPAFRPP-success-")
    # A field the form did not carry (tampering) is refused: the parser must read them all.
    fields.pop("exp")
    with pytest.raises(Exception, match="invalid or was altered"):
        sandbox.submit_hosted_page(fields)


def test_a_page_without_a_form_is_reported_by_its_text(demo):
    html = (
        "<html><head><style>p{color:red}</style><script>var x = 1;</script></head>"
        "<body><h1>Bank connection refused</h1>\n<p>This bank connection link is not "
        "valid: start again from Odoo.</p></body></html>"
    )
    assert demo.parse_first_form(html) == (None, {})
    assert demo.page_text(html) == (
        "Bank connection refused This bank connection link is not valid: start again from Odoo."
    )


@pytest.mark.parametrize("name", ["<template>", 'demo"; DROP DATABASE x; --', ""])
def test_the_test_template_or_an_odd_name_is_refused_before_anything_runs(demo, capsys, name):
    name = demo.TEMPLATE_DB if name == "<template>" else name
    assert demo.main(["--db", name]) == 1
    err = capsys.readouterr().err
    assert "DEMO FAILED" in err
    assert "cannot be the demo database" in err

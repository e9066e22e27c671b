"""The sandbox's hosted-page links are signed with a key nobody else knows: no public default
key can turn them into a redirect to a callback of an attacker's choosing."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from bank_sync_bridge.errors import SignatureVerificationError
from bank_sync_bridge.providers import ProviderConfig
from bank_sync_bridge.providers.sandbox import SandboxProvider
from bank_sync_bridge.testing.clock import AdjustableClock

CALLBACK = "https://erp.example/bank_sync/callback/1"
#: The key every installation used to share when it configured none.
FORMER_PUBLIC_KEY = b"bank-sync-sandbox-demo-key-not-secret"
NOW = datetime(2026, 11, 23, 14, 10, tzinfo=timezone.utc)


def provider(session_key: str | None = None) -> SandboxProvider:
    credentials = {"session_key": session_key} if session_key else {}
    config = ProviderConfig(user_ref="company-1", credentials=credentials)
    return SandboxProvider(config, clock=AdjustableClock(NOW, frozen=True))


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def forged_with_public_key(query: dict[str, str], callback_url: str) -> dict[str, str]:
    """The link an attacker would make with the former public key, sending to their site."""
    params = {k: v for k, v in query.items() if k != "sig"}
    params["callback_url"] = callback_url
    canonical = urlencode(sorted(params.items()))
    signature = hmac.new(FORMER_PUBLIC_KEY, canonical.encode(), hashlib.sha256).hexdigest()
    return {**params, "sig": signature}


@pytest.mark.parametrize("session_key", [None, "installation-key"])
def test_a_link_signed_with_the_former_public_key_is_refused(session_key: str | None) -> None:
    sandbox = provider(session_key)
    query = query_of(sandbox.start_connect(callback_url=CALLBACK, state="s").url)
    forged = forged_with_public_key(query, "https://attacker.example/steal")
    with pytest.raises(SignatureVerificationError):
        sandbox.render_hosted_page(forged)
    with pytest.raises(SignatureVerificationError):
        sandbox.submit_hosted_page({**forged, "login": "success", "bank": "BNPAFRPP"})


def test_without_a_configured_key_links_work_within_the_process_only() -> None:
    # Two clients of one process (a service's cached providers) share the process's key.
    query = query_of(provider().start_connect(callback_url=CALLBACK, state="s").url)
    assert "<form" in provider().render_hosted_page(query)
    back = provider().submit_hosted_page({**query, "login": "success", "bank": "BNPAFRPP"})
    assert provider().complete_connect(query_of(back)).success
    # Another installation's key does not open them.
    with pytest.raises(SignatureVerificationError):
        provider("another-installation").render_hosted_page(query)


def test_the_same_page_gives_the_same_connection_whatever_the_key() -> None:
    for session_key in (None, "installation-key"):
        sandbox = provider(session_key)
        query = query_of(
            sandbox.start_connect(callback_url=CALLBACK, state="s", institution_id="BNPAFRPP").url
        )
        first = sandbox.complete_connect(query_of(sandbox.submit_hosted_page(query)))
        again = sandbox.complete_connect(query_of(sandbox.submit_hosted_page(query)))
        assert first.connection_id == again.connection_id

"""Connect-callback states and tenant request signatures."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from bank_sync_bridge.errors import SignatureVerificationError
from bank_sync_bridge.signing import (
    COMPANY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    canonical_path,
    make_state,
    read_state,
    sign_request,
    verify_request,
)

SECRET = "state-secret-for-tests-0123456789"
NOW = datetime(2025, 3, 16, 7, 0, tzinfo=timezone.utc)
PAYLOAD = {"c": 12345, "p": 7, "u": 2, "db": "prod-eu"}
BRIDGE_CONTEXT = re.compile(r"[A-Za-z0-9-]{1,100}")


def test_state_round_trip_fits_bridge_context_limits() -> None:
    token = make_state(SECRET, PAYLOAD, 900, NOW)
    assert BRIDGE_CONTEXT.fullmatch(token), token
    data = read_state(SECRET, token, NOW + timedelta(minutes=5))
    assert {k: data[k] for k in PAYLOAD} == PAYLOAD
    assert re.fullmatch(r"[0-9a-f]{16}", data["nonce"])
    assert data["exp"] == int((NOW + timedelta(seconds=900)).timestamp())


def test_each_state_has_its_own_nonce_so_replays_can_be_refused() -> None:
    first = read_state(SECRET, make_state(SECRET, PAYLOAD, 900, NOW), NOW)
    second = read_state(SECRET, make_state(SECRET, PAYLOAD, 900, NOW), NOW)
    assert first["nonce"] != second["nonce"]
    # The caller's store: a nonce seen once is refused the second time.
    used: set[str] = set()
    token = make_state(SECRET, PAYLOAD, 900, NOW)
    outcomes = []
    for _ in range(2):
        nonce = read_state(SECRET, token, NOW)["nonce"]
        outcomes.append(nonce not in used)
        used.add(nonce)
    assert outcomes == [True, False]


def test_state_expires_and_max_age_applies() -> None:
    token = make_state(SECRET, PAYLOAD, 600, NOW)
    read_state(SECRET, token, NOW + timedelta(seconds=599))
    with pytest.raises(SignatureVerificationError, match="expired"):
        read_state(SECRET, token, NOW + timedelta(seconds=600))
    with pytest.raises(SignatureVerificationError, match="expired"):
        read_state(SECRET, token, NOW + timedelta(seconds=120), max_age=60)
    with pytest.raises(SignatureVerificationError, match="future"):
        read_state(SECRET, token, NOW - timedelta(hours=1))


def test_forged_or_altered_states_are_refused() -> None:
    token = make_state(SECRET, PAYLOAD, 600, NOW)
    with pytest.raises(SignatureVerificationError, match="could not be verified"):
        read_state("another-secret", token, NOW)
    for position in (3, len(token) // 2, len(token) - 1):
        swapped = "a" if token[position] != "a" else "b"
        altered = token[:position] + swapped + token[position + 1 :]
        with pytest.raises(SignatureVerificationError):
            read_state(SECRET, altered, NOW)
    # A state made for another company with another secret cannot be passed off as ours.
    foreign = make_state("another-secret", {"c": 1}, 600, NOW)
    with pytest.raises(SignatureVerificationError, match="could not be verified"):
        read_state(SECRET, foreign, NOW)


@pytest.mark.parametrize("token", ["", "abc-def", "a" * 401, "short", "ÿÿÿ", "0"])
def test_malformed_states_are_refused(token: str) -> None:
    with pytest.raises(SignatureVerificationError):
        read_state(SECRET, token, NOW)


def test_state_secret_rotation() -> None:
    token = make_state("old-secret", PAYLOAD, 600, NOW)
    assert read_state(["new-secret", "old-secret"], token, NOW)["c"] == 12345
    with pytest.raises(SignatureVerificationError):
        read_state(["new-secret"], token, NOW)


def test_realistic_odoo_payload_with_large_ids_fits() -> None:
    # Database tag, company, provider and user ids well beyond a typical database's.
    payload = {"d": "3f9c2a1b", "c": 99999, "p": 99999, "u": 9999999}
    token = make_state(SECRET, payload, 3600, NOW)
    assert BRIDGE_CONTEXT.fullmatch(token), len(token)
    data = read_state(SECRET, token, NOW)
    assert {k: data[k] for k in payload} == payload
    assert isinstance(data["c"], int)
    assert isinstance(data["d"], str)


def test_payload_types_round_trip() -> None:
    payload = {"n": -42, "s": "", "t": "é=#,x", "z": 0}
    data = read_state(SECRET, make_state(SECRET, payload, 60, NOW, max_length=None), NOW)
    assert {k: data[k] for k in payload} == payload
    for bad in ({"f": 1.5}, {"b": True}, {"l": [1]}, {"bad key": 1}, {"s": "a\x1fb"}):
        with pytest.raises(ValueError, match="must be"):
            make_state(SECRET, bad, 60, NOW)


def test_state_payload_limits() -> None:
    with pytest.raises(ValueError, match="at most 100"):
        make_state(SECRET, {"company": "a very long company name that will not fit"}, 600, NOW)
    with pytest.raises(ValueError, match="reserved"):
        make_state(SECRET, {"nonce": "mine"}, 600, NOW)
    long_token = make_state(SECRET, {"x": "y" * 200}, 600, NOW, max_length=None)
    assert read_state(SECRET, long_token, NOW)["x"] == "y" * 200


# ------------------------------------------------------------------------ tenant requests

BODY = b'{"callback_url":"https://odoo.example/bank_sync/callback","state":"abc"}'
T0 = 1_742_108_000


def test_signed_request_verifies_and_names_the_client() -> None:
    headers = sign_request(SECRET, "post", "/v1/connect-sessions?x=1", BODY, T0, client_id="t1")
    verified = verify_request([SECRET], "POST", "/v1/connect-sessions?x=1", BODY, headers, now=T0)
    assert verified.client_id == "t1"
    assert verified.timestamp == T0
    assert verified.nonce == headers[NONCE_HEADER]
    assert verified.secret_index == 0
    # A framework that gives the full URL, or a bare "?", signs the same thing.
    assert canonical_path("https://svc.example/v1/a?b=2") == "/v1/a?b=2"
    assert canonical_path("/v1/a?") == "/v1/a"
    verify_request(SECRET, "POST", "http://h/v1/connect-sessions?x=1", BODY, headers, now=T0)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/connect-sessions?x=1", BODY),
        ("POST", "/v1/connect-sessions?x=2", BODY),
        ("POST", "/v1/connect-sessions", BODY),
        ("POST", "/v1/connect-sessions?x=1", BODY + b" "),
    ],
)
def test_any_change_breaks_the_signature(method: str, path: str, body: bytes) -> None:
    headers = sign_request(SECRET, "POST", "/v1/connect-sessions?x=1", BODY, T0)
    with pytest.raises(SignatureVerificationError, match="signature is wrong"):
        verify_request(SECRET, method, path, body, headers, now=T0)


def test_replay_window_and_rotation() -> None:
    headers = sign_request("old", "GET", "/v1/accounts", b"", T0)
    assert verify_request(["new", "old"], "GET", "/v1/accounts", b"", headers, now=T0).secret_index
    verify_request("old", "GET", "/v1/accounts", b"", headers, now=T0 + 300)
    with pytest.raises(SignatureVerificationError, match="301 s away"):
        verify_request("old", "GET", "/v1/accounts", b"", headers, now=T0 + 301)
    with pytest.raises(SignatureVerificationError, match="away from the server's clock"):
        verify_request(
            "old", "GET", "/v1/accounts", b"", headers, now=T0 - 61, tolerance_seconds=60
        )
    with pytest.raises(SignatureVerificationError, match="signature is wrong"):
        verify_request(["new"], "GET", "/v1/accounts", b"", headers, now=T0)


def test_unsigned_or_malformed_headers() -> None:
    good = sign_request(SECRET, "GET", "/v1/x", b"", T0)
    with pytest.raises(SignatureVerificationError, match="not signed"):
        verify_request(SECRET, "GET", "/v1/x", b"", {}, now=T0)
    for name, value in (
        (TIMESTAMP_HEADER, "yesterday"),
        (SIGNATURE_HEADER, "zz" * 32),
        (NONCE_HEADER, "bad nonce!"),
    ):
        with pytest.raises(SignatureVerificationError, match="malformed"):
            verify_request(SECRET, "GET", "/v1/x", b"", {**good, name: value}, now=T0)
    # Header names are case-insensitive and the hex may be upper case.
    shouted = {k.upper(): v.upper() if k == SIGNATURE_HEADER else v for k, v in good.items()}
    verify_request(SECRET, "GET", "/v1/x", b"", shouted, now=T0)


def test_the_company_header_is_signed() -> None:
    headers = sign_request(SECRET, "GET", "/v1/accounts", b"", T0, company="acme-1")
    assert headers[COMPANY_HEADER] == "acme-1"
    assert verify_request(SECRET, "GET", "/v1/accounts", b"", headers, now=T0).company == "acme-1"
    for company in ("acme-2", ""):
        with pytest.raises(SignatureVerificationError, match="company"):
            verify_request(
                SECRET, "GET", "/v1/accounts", b"", {**headers, COMPANY_HEADER: company}, now=T0
            )
    unnamed = {k: v for k, v in headers.items() if k != COMPANY_HEADER}
    with pytest.raises(SignatureVerificationError, match="company"):
        verify_request(SECRET, "GET", "/v1/accounts", b"", unnamed, now=T0)
    # A request signed without a company cannot be given one afterwards.
    plain = sign_request(SECRET, "GET", "/v1/accounts", b"", T0)
    with pytest.raises(SignatureVerificationError, match="company"):
        verify_request(
            SECRET, "GET", "/v1/accounts", b"", {**plain, COMPANY_HEADER: "acme-1"}, now=T0
        )


def test_the_signature_names_its_scheme_and_an_older_one_is_refused_plainly() -> None:
    headers = sign_request(SECRET, "GET", "/v1/x", b"", T0)
    assert re.fullmatch(r"v2=[0-9a-f]{64}", headers[SIGNATURE_HEADER])
    bare = {**headers, SIGNATURE_HEADER: headers[SIGNATURE_HEADER][3:]}
    with pytest.raises(SignatureVerificationError, match=r"scheme v1.*update bank_sync_bridge"):
        verify_request(SECRET, "GET", "/v1/x", b"", bare, now=T0)
    future = {**headers, SIGNATURE_HEADER: "v3=" + headers[SIGNATURE_HEADER][3:]}
    with pytest.raises(SignatureVerificationError, match="scheme v3"):
        verify_request(SECRET, "GET", "/v1/x", b"", future, now=T0)

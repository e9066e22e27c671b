"""error_from_response: vendor error bodies become the right exception, with what support needs."""

from __future__ import annotations

from datetime import date

import pytest
from requests.structures import CaseInsensitiveDict

from bank_sync_bridge import crypto, errors, sync
from bank_sync_bridge.errors import (
    AccessDenied,
    ActionRequired,
    AuthenticationError,
    BankSyncError,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
    RateLimited,
    SecretKeyError,
    SignatureVerificationError,
    SyncPlanError,
    error_from_response,
    parse_retry_after,
)
from bank_sync_bridge.model import ActionReason


def test_bridge_body_gives_code_message_and_class() -> None:
    error = error_from_response(
        401,
        {"code": "invalid_client", "property": None, "message": "Client ID or secret invalid"},
        request_id="br-123",
    )
    assert type(error) is AuthenticationError
    assert error.message == "Client ID or secret invalid"
    assert (error.status, error.code, error.request_id) == (401, "invalid_client", "br-123")
    assert str(error) == (
        "Client ID or secret invalid status=401 code=invalid_client request_id=br-123"
    )
    assert not error.retryable


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequest),
        (403, AccessDenied),
        (404, NotFound),
        (409, InvalidRequest),
        (415, InvalidRequest),
        (422, InvalidRequest),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (418, BankSyncError),
    ],
)
def test_statuses_map_onto_the_tree(status: int, cls: type[BankSyncError]) -> None:
    error = error_from_response(status, {"code": "x", "message": "m"})
    assert type(error) is cls
    assert error.retryable is (cls is ProviderUnavailable)


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, "otp_required", ActionReason.SCA),
        (403, "1100", ActionReason.PRO_VALIDATION),
        (400, "402", ActionReason.CREDENTIALS),
        (401, "consent_expired", ActionReason.CONSENT_EXPIRED),
        (409, "SCA_REQUIRED", ActionReason.SCA),  # Linxo, any case
        (400, "user_action_required", ActionReason.BANK_ACTION),
    ],
)
def test_vendor_codes_needing_the_user_win_over_the_status(
    status: int, code: str, reason: ActionReason
) -> None:
    error = error_from_response(status, {"code": code, "message": "Please act at your bank"})
    assert isinstance(error, ActionRequired)
    assert error.reason is reason
    assert error.status == status
    assert not error.retryable


def test_linxo_oauth_error_body() -> None:
    error = error_from_response(
        400, {"error": "invalid_grant", "error_description": "Bad user credentials"}
    )
    assert type(error) is InvalidRequest
    assert (error.code, error.message) == ("invalid_grant", "Bad user credentials")


def test_powens_body_carries_its_request_id() -> None:
    error = error_from_response(
        404,
        {
            "code": "connectionNotFound",
            "description": "Connection not found",
            "message": "The connection 12 does not exist",
            "request_id": "pw-9f8e",
        },
    )
    assert type(error) is NotFound
    assert error.message == "The connection 12 does not exist"
    assert error.request_id == "pw-9f8e"
    # A request id from the response headers is preferred to the body's.
    assert error_from_response(404, {"request_id": "body"}, request_id="hdr").request_id == "hdr"


def test_gocardless_bodies() -> None:
    limited = error_from_response(
        429,
        {
            "summary": "Rate limit exceeded",
            "detail": "Daily request limit set by the Institution has been exceeded.",
            "status_code": 429,
            "type": "RateLimitError",
        },
        headers=CaseInsensitiveDict({"retry-after": "3600"}),
    )
    assert isinstance(limited, RateLimited)
    assert limited.retry_after == 3600
    assert limited.code == "RateLimitError"
    assert limited.message.startswith("Daily request limit")
    assert limited.retryable
    unavailable = error_from_response(503, {"summary": "Service error", "status_code": 503})
    assert isinstance(unavailable, ProviderUnavailable)
    assert unavailable.message == "Service error"


def test_bodies_that_are_not_json_objects() -> None:
    for body in (None, "<html>Bad Gateway</html>", ["unexpected"], {}):
        error = error_from_response(502, body)
        assert type(error) is ProviderUnavailable
        assert error.message == "The aggregator answered HTTP 502"
        assert error.body == body
    assert error_from_response(429, None).retry_after is None  # type: ignore[attr-defined]


def test_parse_retry_after() -> None:
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    # An HTTP date (RFC 9110) counts from now; a date already past means "now".
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("next tuesday") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None


def test_connection_failed_is_retryable_and_plain_message_prints_alone() -> None:
    error = ConnectionFailed("Could not connect")
    assert error.retryable
    assert str(error) == "Could not connect"


def test_gocardless_refusal_per_parameter_keeps_the_vendors_words() -> None:
    error = error_from_response(
        400,
        {
            "date_from": {
                "summary": "Date can't be in future",
                "detail": "'2031-01-01' can't be greater than 2025-03-17",
            },
            "date_to": {"summary": "Incorrect date_to", "detail": "Incorrect date_to"},
            "status_code": 400,
        },
    )
    assert type(error) is InvalidRequest
    assert error.message == (
        "date_from: Date can't be in future - '2031-01-01' can't be greater than 2025-03-17; "
        "date_to: Incorrect date_to"
    )
    assert "The aggregator answered" not in str(error)
    listed = error_from_response(400, {"reference": ["This field is required."]})
    assert listed.message == "reference: This field is required."


#: Whether each class of the tree may succeed later without anyone doing anything.
RETRYABLE = {
    BankSyncError: False,
    ConnectionFailed: True,
    AuthenticationError: False,
    AccessDenied: False,
    NotFound: False,
    InvalidRequest: False,
    RateLimited: True,
    ProviderUnavailable: True,
    ActionRequired: False,
    SignatureVerificationError: False,
    SecretKeyError: False,
    SyncPlanError: False,
}


def test_every_error_of_the_tree_says_whether_it_is_retryable() -> None:
    tree = {cls for cls in vars(errors).values() if isinstance(cls, type)}
    tree = {cls for cls in tree if issubclass(cls, BankSyncError)}
    assert tree == set(RETRYABLE)
    for cls, retryable in RETRYABLE.items():
        assert cls.retryable is retryable, cls.__name__
    made = {
        ConnectionFailed: ConnectionFailed("down"),
        RateLimited: RateLimited("slow down", retry_after=3),
        ActionRequired: ActionRequired("act", reason=ActionReason.SCA),
        SecretKeyError: SecretKeyError("no key", code="no_key"),
        SyncPlanError: SyncPlanError("inverted", code="inverted"),
    }
    for cls, error in made.items():
        assert error.retryable is RETRYABLE[cls], cls.__name__


def test_secret_and_plan_errors_belong_to_the_tree_where_they_always_were() -> None:
    assert crypto.SecretKeyError is SecretKeyError
    assert sync.SyncPlanError is SyncPlanError
    with pytest.raises(BankSyncError) as secret:
        crypto.SecretBox.from_config("")
    assert secret.value.code == "no_key"
    assert str(secret.value) == secret.value.message  # an administrator's sentence, as before
    with pytest.raises(BankSyncError) as plan:
        sync.plan_window(today=date(2025, 3, 1), forced_from=date(2025, 3, 9), forced=True)
    assert plan.value.code == "future"
    assert isinstance(plan.value, ValueError)
    assert str(plan.value) == plan.value.message
    assert not plan.value.retryable

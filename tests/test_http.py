"""HttpClient against a real HTTP server on 127.0.0.1: retries, errors, request ids, redaction."""

from __future__ import annotations

import email.utils
import logging
import time
from decimal import Decimal

import pytest
from conftest import ScriptedResponse, ScriptedServer

from bank_sync_bridge.errors import (
    AuthenticationError,
    BankSyncError,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
    RateLimited,
)
from bank_sync_bridge.http import HttpClient, Redactor, join_url


class Sleeps(list[float]):
    """Records the delays the client asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(base_url: str, sleeps: Sleeps, **kwargs: object) -> HttpClient:
    options: dict[str, object] = {
        "timeout": (2.0, 2.0),
        "max_retries": 3,
        "backoff_base": 0.5,
        "backoff_cap": 8.0,
        "sleep": sleeps,
        # Always the top of the jitter range, so the delays are exact.
        "jitter": lambda: 1.0,
    }
    options.update(kwargs)
    return HttpClient(base_url, **options)  # type: ignore[arg-type]


def test_get_retries_503_then_succeeds(scripted_server: ScriptedServer) -> None:
    scripted_server.add(
        ScriptedResponse(503, {"message": "maintenance"}),
        ScriptedResponse(200, {"resources": [1, 2]}, headers={"X-Request-Id": "req-42"}),
    )
    sleeps = Sleeps()
    with make_client(scripted_server.url + "/v3", sleeps) as client:
        response = client.get("/aggregation/items")
    assert response.status == 200
    assert response.body == {"resources": [1, 2]}
    assert response.request_id == "req-42"
    assert [r.path for r in scripted_server.received] == ["/v3/aggregation/items"] * 2
    assert sleeps == [0.5]


def test_backoff_grows_exponentially_up_to_cap_then_raises(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.add(*[ScriptedResponse(502, "bad gateway")] * 6)
    sleeps = Sleeps()
    client = make_client(scripted_server.url, sleeps, max_retries=5, backoff_cap=3.0)
    with pytest.raises(ProviderUnavailable) as info:
        client.get("/items")
    assert info.value.status == 502
    assert info.value.body == "bad gateway"
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(scripted_server.received) == 6


def test_jitter_keeps_delays_between_half_and_full_backoff(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.add(*[ScriptedResponse(500)] * 3)
    sleeps = Sleeps()
    client = make_client(scripted_server.url, sleeps, max_retries=2, jitter=lambda: 0.0)
    with pytest.raises(ProviderUnavailable):
        client.get("/items")
    assert sleeps == [0.25, 0.5]


def test_429_honours_retry_after(scripted_server: ScriptedServer) -> None:
    scripted_server.add(
        ScriptedResponse(429, {"code": "rate_limited"}, headers={"Retry-After": "7"}),
        ScriptedResponse(200, {"ok": 1}),
    )
    sleeps = Sleeps()
    response = make_client(scripted_server.url, sleeps).get("/items")
    assert response.body == {"ok": 1}
    assert sleeps == [7.0]


def test_429_honours_retry_after_given_as_an_http_date(scripted_server: ScriptedServer) -> None:
    in_20_s = email.utils.formatdate(time.time() + 20, usegmt=True)
    scripted_server.add(
        ScriptedResponse(429, headers={"Retry-After": in_20_s}),
        ScriptedResponse(200, {"ok": 1}),
    )
    sleeps = Sleeps()
    response = make_client(scripted_server.url, sleeps).get("/items")
    assert response.body == {"ok": 1}
    assert len(sleeps) == 1
    assert 17.0 <= sleeps[0] <= 21.0  # the date has a one-second resolution


def test_429_with_retry_after_beyond_cap_is_raised_at_once(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.add(ScriptedResponse(429, headers={"Retry-After": "3600"}))
    sleeps = Sleeps()
    client = make_client(scripted_server.url, sleeps, max_retry_after=60)
    with pytest.raises(RateLimited) as info:
        client.get("/items")
    assert info.value.retry_after == 3600
    assert sleeps == []
    assert len(scripted_server.received) == 1


def test_post_is_not_retried_unless_declared_idempotent(scripted_server: ScriptedServer) -> None:
    sleeps = Sleeps()
    client = make_client(scripted_server.url, sleeps)
    scripted_server.add(ScriptedResponse(503), ScriptedResponse(200, {"id": 1}))
    with pytest.raises(ProviderUnavailable):
        client.post("/aggregation/users", json={"external_user_id": "c1"})
    assert len(scripted_server.received) == 1
    assert sleeps == []


def test_post_declared_idempotent_is_retried(scripted_server: ScriptedServer) -> None:
    sleeps = Sleeps()
    client = make_client(scripted_server.url, sleeps)
    # The first try meets the 503: only a retry can reach the 200.
    scripted_server.add(ScriptedResponse(503), ScriptedResponse(200, {"id": 2}))
    response = client.post("/aggregation/items/1/refresh", idempotent=True)
    assert response.body == {"id": 2}
    assert [(r.method, r.path) for r in scripted_server.received] == [
        ("POST", "/aggregation/items/1/refresh")
    ] * 2
    assert sleeps == [0.5]


def test_get_marked_not_idempotent_is_not_retried(scripted_server: ScriptedServer) -> None:
    scripted_server.add(ScriptedResponse(503))
    sleeps = Sleeps()
    with pytest.raises(ProviderUnavailable):
        make_client(scripted_server.url, sleeps).get("/x", idempotent=False)
    assert len(scripted_server.received) == 1


def test_client_errors_are_mapped_and_never_retried(scripted_server: ScriptedServer) -> None:
    scripted_server.add(
        ScriptedResponse(
            401,
            {"code": "unauthorized", "message": "Invalid client credentials"},
            headers={"X-Bridge-Request-Id": "br-1"},
        ),
        ScriptedResponse(404, {"code": "not_found", "message": "Item not found"}),
        ScriptedResponse(422, {"code": "invalid", "property": "since", "message": "bad date"}),
    )
    sleeps = Sleeps()
    client = make_client(scripted_server.url, sleeps)
    with pytest.raises(AuthenticationError) as auth:
        client.get("/items")
    assert auth.value.message == "Invalid client credentials"
    assert auth.value.request_id == "br-1"
    assert auth.value.status == 401
    with pytest.raises(NotFound):
        client.get("/items/9")
    with pytest.raises(InvalidRequest) as invalid:
        client.get("/transactions", params={"since": "yesterday"})
    assert invalid.value.body["property"] == "since"
    assert sleeps == []
    assert len(scripted_server.received) == 3


def test_expected_statuses_let_callers_accept_a_404(scripted_server: ScriptedServer) -> None:
    scripted_server.add(ScriptedResponse(404, {"message": "gone"}), ScriptedResponse(204))
    client = make_client(scripted_server.url, Sleeps())
    assert client.delete("/items/1", expected=(204, 404)).status == 404
    deleted = client.delete("/items/2", expected=(204, 404))
    assert (deleted.status, deleted.body) == (204, None)


def test_read_timeout_is_enforced_and_retried(scripted_server: ScriptedServer) -> None:
    scripted_server.add(
        ScriptedResponse(200, {"late": True}, delay=1.0), ScriptedResponse(200, {"on_time": True})
    )
    sleeps = Sleeps()
    client = make_client(scripted_server.url, sleeps, timeout=(1.0, 0.3))
    assert client.get("/slow").body == {"on_time": True}
    assert sleeps == [0.5]

    scripted_server.add(ScriptedResponse(200, {"late": True}, delay=1.0))
    with pytest.raises(ConnectionFailed, match=r"did not answer within 0\.3 s"):
        client.post("/slow")


def test_invalid_json_on_success_is_provider_unavailable(scripted_server: ScriptedServer) -> None:
    scripted_server.add(
        ScriptedResponse(200, "<html>Maintenance</html>", headers={"Content-Type": "text/html"})
    )
    with pytest.raises(ProviderUnavailable, match="not valid JSON") as info:
        make_client(scripted_server.url, Sleeps(), max_retries=0).get("/items")
    assert info.value.status == 200


def test_text_answers_are_allowed_when_asked(scripted_server: ScriptedServer) -> None:
    scripted_server.add(ScriptedResponse(200, "plain text", headers={"Content-Type": "text/plain"}))
    response = make_client(scripted_server.url, Sleeps()).get("/doc", expect_json=False)
    assert response.body == "plain text"


def test_truncated_body_is_detected_and_retried(scripted_server: ScriptedServer) -> None:
    full = {"resources": [{"id": n, "amount": -12.5} for n in range(20)]}
    scripted_server.add(ScriptedResponse(200, full, truncate_to=40), ScriptedResponse(200, full))
    sleeps = Sleeps()
    response = make_client(scripted_server.url, sleeps).get("/transactions")
    assert response.body == full
    assert sleeps == [0.5]

    scripted_server.add(ScriptedResponse(200, full, truncate_to=40))
    with pytest.raises(ProviderUnavailable, match="cut off"):
        make_client(scripted_server.url, Sleeps(), max_retries=0).get("/transactions")


def test_connection_refused_is_retried_then_connection_failed(closed_port: int) -> None:
    sleeps = Sleeps()
    client = make_client(f"http://127.0.0.1:{closed_port}", sleeps, max_retries=2)
    with pytest.raises(ConnectionFailed, match="Could not connect") as info:
        client.get("/items", params={"access_token": "tok-should-not-leak"})
    assert info.value.retryable
    assert sleeps == [0.5, 1.0]
    assert "tok-should-not-leak" not in str(info.value)
    assert not info.value.sent
    # A refused connection sent nothing: even a POST is tried again.
    sleeps.clear()
    with pytest.raises(ConnectionFailed):
        client.post("/aggregation/users", json={"external_user_id": "c1"})
    assert sleeps == [0.5, 1.0]


def test_post_is_not_replayed_once_the_server_may_have_received_it(
    scripted_server: ScriptedServer,
) -> None:
    # The server reads the request then answers after the read timeout: the POST may have
    # created the user, so replaying it could create a second one.
    scripted_server.add(ScriptedResponse(201, {"uuid": "u1"}, delay=1.0))
    sleeps = Sleeps()
    client = make_client(scripted_server.url, sleeps, max_retries=2, timeout=(2.0, 0.2))
    with pytest.raises(ConnectionFailed, match="did not answer") as info:
        client.post("/aggregation/users", json={"external_user_id": "c1"})
    assert info.value.sent
    assert sleeps == []
    assert len(scripted_server.received) == 1


def test_redirects_are_not_followed(scripted_server: ScriptedServer) -> None:
    scripted_server.add(ScriptedResponse(302, headers={"Location": "http://127.0.0.1:9/steal"}))
    with pytest.raises(BankSyncError) as info:
        make_client(scripted_server.url, Sleeps()).get("/items")
    assert info.value.status == 302
    assert len(scripted_server.received) == 1


def test_request_id_headers_are_configurable(scripted_server: ScriptedServer) -> None:
    scripted_server.add(ScriptedResponse(200, {}, headers={"X-Trace": "t-9"}))
    client = make_client(scripted_server.url, Sleeps(), request_id_headers=("X-Trace",))
    assert client.get("/").request_id == "t-9"


def test_json_numbers_can_be_read_as_decimal(scripted_server: ScriptedServer) -> None:
    scripted_server.add(ScriptedResponse(200, b'{"amount": -1234.10}'))
    body = make_client(scripted_server.url, Sleeps(), json_decimal=True).get("/").body
    assert body["amount"] == Decimal("-1234.10")


def test_logs_show_the_call_but_no_secret(
    scripted_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    scripted_server.add(
        ScriptedResponse(500, {"message": "oops tok-access-123"}),
        ScriptedResponse(200, {"ok": True}, headers={"Request-Id": "rid-77"}),
        ScriptedResponse(400, {"error": "invalid_grant", "error_description": "bad pw hunter22"}),
    )
    client = make_client(
        scripted_server.url,
        Sleeps(),
        default_headers={"Client-Id": "cid", "Client-Secret": "cs-very-secret"},
        secret_values=["registered-secret-value"],
    )
    with caplog.at_level(logging.DEBUG, logger="bank_sync_bridge.http"):
        client.get(
            "/accounts/registered-secret-value",
            params={"access_token": "tok-access-123", "limit": 50},
            headers={"Authorization": "Bearer bearer-xyz-789"},
        )
        with pytest.raises(InvalidRequest) as refused:
            client.post(
                "/token",
                data={"grant_type": "password", "username": "u", "password": "hunter22"},
            )
    assert str(refused.value).startswith("bad pw *** status=400")
    # The server did receive the secrets: redaction is for logs only.
    assert scripted_server.received[0].headers["Client-Secret"] == "cs-very-secret"
    assert "access_token=tok-access-123" in scripted_server.received[0].path
    text = caplog.text
    for secret in (
        "tok-access-123",
        "cs-very-secret",
        "bearer-xyz-789",
        "registered-secret-value",
        "hunter22",
    ):
        assert secret not in text
    assert "GET" in text
    assert "limit=50" in text
    assert "access_token=***" in text
    assert "-> 500" in text
    assert "-> 200" in text
    assert "rid-77" in text
    assert "retry 1/3" in text


def test_next_url_follows_relative_links_on_the_same_host(scripted_server: ScriptedServer) -> None:
    scripted_server.add(
        ScriptedResponse(
            200,
            {"resources": [1], "pagination": {"next_uri": "/v3/transactions?after=abc&limit=1"}},
        ),
        ScriptedResponse(200, {"resources": [2], "pagination": {"next_uri": None}}),
    )
    client = make_client(scripted_server.url + "/v3", Sleeps())
    seen: list[int] = []
    url: str | None = client.url("/transactions")
    while url:
        page = client.get(url).json_object()
        seen.extend(page["resources"])
        next_uri = page["pagination"]["next_uri"]
        url = client.next_url(next_uri) if next_uri else None
    assert seen == [1, 2]
    assert scripted_server.received[1].path == "/v3/transactions?after=abc&limit=1"
    with pytest.raises(ProviderUnavailable, match="another host"):
        client.next_url("https://evil.example/v3/transactions?after=x")


def test_join_url_and_redactor_url() -> None:
    assert join_url("https://api.example/v3/", "/items") == "https://api.example/v3/items"
    assert join_url("https://api.example/v3", "https://other/x") == "https://other/x"
    with pytest.raises(ValueError):
        join_url("", "/items")
    redactor = Redactor(["s3cr3t value"])
    assert (
        redactor.url("https://u:pw@h/p?client_secret=abc&q=s3cr3t+value&x=1")
        == "https://u:***@h/p?client_secret=***&q=***&x=1"
    )
    assert redactor.headers({"authorization": "Bearer t", "Accept": "json"}) == {
        "authorization": "***",
        "Accept": "json",
    }

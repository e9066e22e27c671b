"""Connection health rules: alert policy, consent reminders, stall detection, rate limits."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import pytest

from bank_sync_bridge.health import (
    BatchPlan,
    ConsentUrgency,
    HealthRecord,
    LimitScope,
    RateLimit,
    SyncJob,
    assess_connection,
    check_stall,
    consent_urgency,
    due_consent_reminder,
    incident_key,
    incident_reason,
    plan_batch,
    plan_failure_retry,
    plan_rate_limit_backoff,
    published_limits,
    replan_after_rate_limit,
)
from bank_sync_bridge.model import ActionReason, ConnectionState

DAY0 = date(2025, 3, 3)
OK = ConnectionState.OK
TEMP = ConnectionState.TEMPORARY_FAILURE
ACTION = ConnectionState.ACTION_NEEDED


def replay(observations, *, failure_alert_days=3):
    """Feed (day offset, state, reason) observations; return the alerts and resolutions."""
    record = HealthRecord()
    raised, resolved = [], []
    for offset, state, reason in observations:
        decision = assess_connection(
            record, state, reason, DAY0 + timedelta(days=offset),
            failure_alert_days=failure_alert_days,
        )  # fmt: skip
        record = decision.record
        if decision.raise_alert:
            raised.append((offset, decision.raise_alert))
        if decision.resolved:
            resolved.append((offset, decision.resolved))
    return raised, resolved, record


# -- alert policy ------------------------------------------------------------------------------


def test_temporary_failure_alerts_only_on_the_nth_failed_day_and_once() -> None:
    raised, resolved, record = replay([(d, TEMP, None) for d in range(6)])
    assert raised == [(2, "temporary_failure")]
    assert resolved == []
    assert record.failed_days == 6
    assert record.failing_since == DAY0


def test_hourly_runs_do_not_shorten_the_grace_period() -> None:
    # 24 failed runs on the same two days are still only two failed days.
    observations = [(d, TEMP, None) for d in (0, 1) for _ in range(24)]
    raised, _, record = replay(observations)
    assert raised == []
    assert record.failed_days == 2


def test_failure_threshold_is_configurable() -> None:
    raised, _, _ = replay([(d, TEMP, None) for d in range(6)], failure_alert_days=5)
    assert raised == [(4, "temporary_failure")]
    raised, _, _ = replay([(0, TEMP, None)], failure_alert_days=1)
    assert raised == [(0, "temporary_failure")]
    with pytest.raises(ValueError):
        assess_connection(HealthRecord(), TEMP, None, DAY0, failure_alert_days=0)


def test_an_ok_day_breaks_the_streak_and_resolves_the_incident() -> None:
    raised, resolved, record = replay(
        [(0, TEMP, None), (1, TEMP, None), (2, OK, None), (3, TEMP, None), (4, TEMP, None)]
    )
    assert raised == []  # never three failed days in a row
    assert record.failed_days == 2
    raised, resolved, record = replay([(d, TEMP, None) for d in range(3)] + [(3, OK, None)])
    assert resolved == [(3, "temporary_failure")]
    assert record == HealthRecord()


def test_action_needed_alerts_at_once_and_once_per_incident() -> None:
    obs = [(0, ACTION, ActionReason.SCA), (1, ACTION, ActionReason.SCA), (2, OK, None)]
    raised, resolved, _ = replay(obs)
    assert raised == [(0, "action_needed:sca")]
    assert resolved == [(2, "action_needed:sca")]


def test_a_new_reason_is_a_new_incident_superseding_the_old_one() -> None:
    raised, resolved, record = replay(
        [(0, ACTION, ActionReason.SCA), (1, ACTION, ActionReason.CREDENTIALS)]
    )
    assert raised == [(0, "action_needed:sca"), (1, "action_needed:credentials")]
    assert resolved == [(1, "action_needed:sca")]
    assert record.incident == "action_needed:credentials"


def test_syncing_neither_alerts_nor_resolves() -> None:
    raised, resolved, record = replay(
        [(0, ACTION, ActionReason.CONSENT_EXPIRED), (1, ConnectionState.SYNCING, None)]
    )
    assert raised == [(0, "action_needed:consent_expired")]
    assert resolved == []
    assert record.incident == "action_needed:consent_expired"


def test_temporary_failure_during_an_open_action_incident_adds_no_alert() -> None:
    raised, _, _ = replay([(0, ACTION, ActionReason.SCA)] + [(d, TEMP, None) for d in (1, 2, 3)])
    assert raised == [(0, "action_needed:sca")]


def test_disconnected_alerts_at_once() -> None:
    raised, _, _ = replay([(0, ConnectionState.DISCONNECTED, None)])
    assert raised == [(0, "disconnected")]


def test_incident_keys_round_trip_their_reason() -> None:
    key = incident_key(ACTION, ActionReason.PRO_VALIDATION)
    assert key == "action_needed:pro_validation"
    assert incident_reason(key) is ActionReason.PRO_VALIDATION
    assert incident_reason("temporary_failure") is None
    assert incident_reason("action_needed:nonsense") is None
    assert incident_key(OK) is None


# -- consent -----------------------------------------------------------------------------------


def test_consent_reminders_go_out_at_15_3_and_1_days_each_once() -> None:
    expires = datetime(2025, 4, 20, 9, 30, tzinfo=timezone.utc)
    now = expires - timedelta(days=30)
    last_sent = None
    sent_on = []
    # A daily run at 06:00 and another at 18:00 for 35 days: moving clock.
    while now < expires + timedelta(days=5):
        due = due_consent_reminder(expires, now, last_sent)
        if due is not None:
            sent_on.append((due, (expires.date() - now.date()).days))
            last_sent = due
        now += timedelta(hours=12)
    assert sent_on == [(15, 15), (3, 3), (1, 1)]


def test_a_connection_first_seen_late_gets_only_the_most_urgent_reminder() -> None:
    expires = datetime(2025, 4, 20, tzinfo=timezone.utc)
    now = datetime(2025, 4, 18, 8, tzinfo=timezone.utc)  # 2 days left
    assert due_consent_reminder(expires, now, None) == 3
    assert due_consent_reminder(expires, now, 3) is None
    assert due_consent_reminder(expires, expires + timedelta(days=1), None) is None
    assert due_consent_reminder(None, now, None) is None


def test_reminders_accept_naive_utc_datetimes_as_odoo_stores_them() -> None:
    expires = datetime(2025, 4, 20, 12, 0)
    assert due_consent_reminder(expires, datetime(2025, 4, 5, 23, 0), None) == 15


def test_consent_colour_moves_from_ok_to_expired() -> None:
    expires = datetime(2025, 4, 20, 12, tzinfo=timezone.utc)
    colour = [
        consent_urgency(expires, expires - timedelta(days=d))
        for d in (40, 15, 4, 3, 0.25, -1)
    ]  # fmt: skip
    assert colour == [
        ConsentUrgency.OK,
        ConsentUrgency.SOON,
        ConsentUrgency.SOON,
        ConsentUrgency.URGENT,
        ConsentUrgency.URGENT,
        ConsentUrgency.EXPIRED,
    ]
    assert consent_urgency(None, expires) is ConsentUrgency.NONE


# -- stall -------------------------------------------------------------------------------------

TODAY = date(2025, 6, 30)


def test_a_busy_account_silent_for_n_days_is_stalled() -> None:
    # Operations every other day until ten days ago.
    dates = [TODAY - timedelta(days=d) for d in range(10, 90, 2)]
    check = check_stall(dates, TODAY, stall_days=7)
    assert check.stalled
    assert check.days_silent == 10
    assert check.median_gap == 2.0
    assert check.last_operation == TODAY - timedelta(days=10)


def test_a_busy_account_with_recent_operations_is_not_stalled() -> None:
    dates = [TODAY - timedelta(days=d) for d in range(3, 90, 2)]
    check = check_stall(dates, TODAY, stall_days=7)
    assert check.usually_active
    assert not check.stalled


def test_stall_threshold_is_configurable() -> None:
    dates = [TODAY - timedelta(days=d) for d in range(10, 90, 2)]
    assert not check_stall(dates, TODAY, stall_days=14).stalled
    with pytest.raises(ValueError):
        check_stall(dates, TODAY, stall_days=0)


def test_a_quiet_account_never_stalls() -> None:
    # A savings account: one operation a month, silent for 25 days; it is its normal rhythm.
    dates = [TODAY - timedelta(days=d) for d in (25, 55, 85)]
    check = check_stall(dates, TODAY, stall_days=7)
    assert not check.usually_active
    assert not check.stalled
    # Weekly operations are too sparse for a 7-day silence to mean anything either.
    weekly = [TODAY - timedelta(days=d) for d in range(8, 90, 7)]
    assert not check_stall(weekly, TODAY, stall_days=7).stalled
    # An account that never had an operation is not stalled: nothing is expected of it.
    assert not check_stall([], TODAY).stalled


def test_old_history_beyond_the_lookback_does_not_count() -> None:
    dates = [TODAY - timedelta(days=d) for d in range(100, 200)]
    check = check_stall(dates, TODAY, stall_days=7, lookback_days=90)
    assert not check.stalled
    assert check.last_operation is None


# -- rate limits -------------------------------------------------------------------------------


def max_in_any_window(events, window):
    """Brute force: the largest request count in any sliding window."""
    events = sorted(events)
    best = 0
    for i, (start, _) in enumerate(events):
        total = sum(count for when, count in events[i:] if when < start + window)
        best = max(best, total)
    return best


def assert_respects(plan: BatchPlan, limits) -> None:
    per_user = defaultdict(list)
    per_user_tokens = defaultdict(list)
    app = []
    for item in plan.jobs:
        cost = item.job.requests + item.token_requests
        per_user[item.job.user_ref].append((item.start_offset, cost))
        app.append((item.start_offset, cost))
        if item.token_requests:
            per_user_tokens[item.job.user_ref].append((item.start_offset, item.token_requests))
    for limit in limits:
        if limit.scope is LimitScope.APP:
            series = [app]
        elif limit.scope is LimitScope.USER:
            series = list(per_user.values())
        else:
            series = list(per_user_tokens.values())
        for events in series:
            assert max_in_any_window(events, limit.window_seconds) <= limit.max_requests


def test_bridge_published_limits() -> None:
    limits = {
        (limit.scope, limit.max_requests, limit.window_seconds)
        for limit in published_limits("bridgeapi")
    }
    assert limits == {
        (LimitScope.USER, 60, 60.0),
        (LimitScope.APP, 2000, 300.0),
        (LimitScope.USER_TOKEN, 10, 60.0),
    }
    # Linxo publishes none: ours are stricter than Bridge's, never looser.
    for linxo, bridge in zip(published_limits("linxo"), published_limits("bridgeapi"), strict=True):
        assert linxo.scope is bridge.scope and linxo.max_requests <= bridge.max_requests


def test_one_company_with_many_accounts_is_spread_over_minutes() -> None:
    limits = published_limits("bridgeapi")
    jobs = [SyncJob(f"acc{i}", "company-1", requests=3) for i in range(50)]
    plan = plan_batch(jobs, limits)
    assert_respects(plan, limits)
    assert [j.job.key for j in plan.jobs] == [f"acc{i}" for i in range(50)]
    # 50 accounts x 3 requests + 1 token = 151 requests at 60/min: at least two full minutes.
    assert 120 <= plan.duration <= 180
    assert sum(j.token_requests for j in plan.jobs) == 1


def test_many_companies_share_the_application_budget_fairly() -> None:
    limits = published_limits("bridgeapi")
    rng = random.Random(7)
    jobs = [
        SyncJob(f"c{c}-a{a}", f"company-{c}", requests=rng.randint(2, 6))
        for c in range(120)
        for a in range(rng.randint(1, 12))
    ]
    plan = plan_batch(jobs, limits)
    assert len(plan.jobs) == len(jobs)
    assert_respects(plan, limits)
    total = sum(j.job.requests + j.token_requests for j in plan.jobs)
    # The application limit (2000 / 5 min) is what bounds the batch; it is used, not wasted.
    assert plan.duration >= (total // 2000 - 1) * 300
    assert plan.duration <= (total // 2000 + 1) * 300 + 60
    # A company with a single account is served in the first window, not after the big ones.
    first = {j.job.user_ref: j.start_offset for j in reversed(plan.jobs)}
    assert max(first.values()) < 300


def test_tokens_are_fetched_again_when_they_expire() -> None:
    limits = (RateLimit(LimitScope.USER, 2, 60.0), RateLimit(LimitScope.USER_TOKEN, 1, 60.0))
    jobs = [SyncJob(f"a{i}", "u", requests=1) for i in range(6)]
    plan = plan_batch(jobs, limits, token_ttl=120.0)
    assert_respects(plan, limits)
    assert [j.token_requests for j in plan.jobs].count(1) >= 2


def test_a_job_bigger_than_a_limit_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="never fit"):
        plan_batch([SyncJob("a", "u", requests=61)], published_limits("bridgeapi"))


def test_rate_limit_backoff_waits_as_told_then_doubles_then_defers() -> None:
    now = datetime(2025, 3, 3, 6, tzinfo=timezone.utc)
    told = plan_rate_limit_backoff(now, 1, retry_after=42)
    assert told.resume_at == now + timedelta(seconds=42)
    assert not told.defer_to_next_run
    waits = [(plan_rate_limit_backoff(now, n).resume_at - now).total_seconds() for n in range(1, 8)]
    assert waits == [30, 60, 120, 240, 480, 960, 1800]
    assert plan_rate_limit_backoff(now, 6).defer_to_next_run
    assert plan_rate_limit_backoff(now.replace(tzinfo=None), 2).resume_at.tzinfo is timezone.utc
    with pytest.raises(ValueError):
        plan_rate_limit_backoff(now, 0)


def test_a_429_mid_batch_resumes_the_rest_after_the_wait() -> None:
    limits = published_limits("bridgeapi")
    jobs = [SyncJob(f"a{i}", f"u{i % 3}") for i in range(30)]
    plan = plan_batch(jobs, limits)
    done = [j.job.key for j in plan.jobs[:10]]
    rest = replan_after_rate_limit(plan, done, limits, resume_offset=500.0)
    assert [j.job.key for j in rest.jobs] == [j.job.key for j in plan.jobs[10:]]
    assert min(j.start_offset for j in rest.jobs) == 500.0
    assert_respects(rest, limits)
    assert rest.due(500.0) and not rest.due(499.0)


def test_a_passing_failure_is_retried_later_then_left_to_the_next_day() -> None:
    now = datetime(2026, 3, 2, 5, 0, tzinfo=timezone.utc)
    plans = [plan_failure_retry(now, n) for n in range(1, 5)]
    waits = [(plan.resume_at - now).total_seconds() for plan in plans[:3]]
    assert waits == [900.0, 3600.0, 14400.0]
    assert [plan.defer_to_next_run for plan in plans] == [False, False, False, True]
    custom = plan_failure_retry(now, 1, delays=(60,))
    assert (custom.resume_at - now).total_seconds() == 60
    assert plan_failure_retry(now, 2, delays=(60,)).defer_to_next_run
    with pytest.raises(ValueError):
        plan_failure_retry(now, 0)

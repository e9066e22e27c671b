"""Connection health rules: when to alert, when to remind, when to worry, when to call.

Pure functions over plain values, so that the Odoo addon and the bridge service apply the same
policy and tests can replay weeks of history in microseconds:

- :func:`assess_connection`: the alert policy. Action-needed and disconnected states alert at
  once; temporary failures only after N consecutive failed days; one alert per incident, and
  the incident is resolved when the connection is ok again.
- :func:`due_consent_reminder` and :func:`consent_urgency`: reminders 15, 3 and 1 days before
  the bank consent expires (each sent once per expiry date) and the colour shown meanwhile.
- :func:`check_stall`: an active account that usually receives operations but has brought
  none for N days, although its connection says ok.
- :func:`published_limits`, :func:`plan_batch` and :func:`plan_rate_limit_backoff`: spread a
  daily batch of accounts under the aggregators' published rate limits, and turn a 429 answer
  into "resume at", never into an error shown to a user.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone

from .model import ActionReason, ConnectionState

# --------------------------------------------------------------------------------------------
# Alert policy
# --------------------------------------------------------------------------------------------

#: Default number of consecutive failed days before a temporary failure alerts someone:
#: Bridge itself retries a failed refresh (``1003``) on its own schedule, so one bad night is
#: noise, three in a row is a bank that needs a look.
DEFAULT_FAILURE_ALERT_DAYS = 3

INCIDENT_TEMPORARY_FAILURE = "temporary_failure"
INCIDENT_DISCONNECTED = "disconnected"
_ACTION_PREFIX = "action_needed"


def incident_key(state: ConnectionState, reason: ActionReason | None = None) -> str | None:
    """The incident a state belongs to (``"action_needed:sca"``...), None for ok/syncing.

    Two observations with the same key are the same incident: one alert covers both.
    """
    if state is ConnectionState.ACTION_NEEDED:
        return f"{_ACTION_PREFIX}:{(reason or ActionReason.CREDENTIALS).value}"
    if state is ConnectionState.TEMPORARY_FAILURE:
        return INCIDENT_TEMPORARY_FAILURE
    if state is ConnectionState.DISCONNECTED:
        return INCIDENT_DISCONNECTED
    return None


def incident_reason(key: str | None) -> ActionReason | None:
    """The :class:`ActionReason` inside an action-needed incident key, else None."""
    if not key or not key.startswith(_ACTION_PREFIX + ":"):
        return None
    try:
        return ActionReason(key.split(":", 1)[1])
    except ValueError:
        return None


@dataclass(frozen=True)
class HealthRecord:
    """What must be remembered about a connection between two observations.

    ``failed_days`` counts distinct calendar days on which the connection was seen failing
    with no ok observation in between (days without any observation neither count nor break
    the streak: a cron that did not run says nothing about the bank). ``incident`` is the key
    of the incident whose alert already went out, None when nothing is open.
    """

    failed_days: int = 0
    last_failed_day: date | None = None
    failing_since: date | None = None
    incident: str | None = None


@dataclass(frozen=True)
class HealthDecision:
    """Outcome of one observation: the record to store and what to tell people."""

    record: HealthRecord
    #: Incident key to alert about now (activity + e-mail), or None.
    raise_alert: str | None = None
    #: Incident key that is over now (close its activity), or None.
    resolved: str | None = None


def assess_connection(
    record: HealthRecord,
    state: ConnectionState,
    reason: ActionReason | None,
    today: date,
    *,
    failure_alert_days: int = DEFAULT_FAILURE_ALERT_DAYS,
) -> HealthDecision:
    """Apply one observation of a connection's state to its health record.

    - ``OK`` resolves the open incident (if any) and resets the failure streak.
    - ``SYNCING`` changes nothing: a refresh in progress is neither good nor bad news.
    - ``ACTION_NEEDED`` and ``DISCONNECTED`` alert at once, unless the same incident (same
      reason) is already open; a different reason is a new incident (the user must now do
      something else), which replaces the old one.
    - ``TEMPORARY_FAILURE`` alerts only once the streak reaches ``failure_alert_days``
      distinct days, and never while another incident is already open (its alert stands).

    Observing the same state several times a day never counts the day twice, so running the
    sync hourly does not shorten the grace period.
    """
    if failure_alert_days < 1:
        raise ValueError("failure_alert_days must be at least 1")
    if state is ConnectionState.SYNCING:
        return HealthDecision(record)
    if state is ConnectionState.OK:
        return HealthDecision(HealthRecord(), resolved=record.incident)

    failed_days = record.failed_days
    if record.last_failed_day != today:
        failed_days += 1
    record = replace(
        record,
        failed_days=failed_days,
        last_failed_day=today,
        failing_since=record.failing_since or today,
    )
    key = incident_key(state, reason)
    if state is ConnectionState.TEMPORARY_FAILURE:
        if record.incident is None and failed_days >= failure_alert_days:
            return HealthDecision(replace(record, incident=key), raise_alert=key)
        return HealthDecision(record)
    if record.incident == key:
        return HealthDecision(record)
    # A new or different user-facing problem: alert now; the previous one is superseded.
    superseded = record.incident
    return HealthDecision(replace(record, incident=key), raise_alert=key, resolved=superseded)


# --------------------------------------------------------------------------------------------
# Consent expiry
# --------------------------------------------------------------------------------------------

#: Days before the consent ends at which a reminder goes out, farthest first.
DEFAULT_REMINDER_DAYS: tuple[int, ...] = (15, 3, 1)


class ConsentUrgency(str, enum.Enum):
    """How close the bank consent is to its end, as the dashboards colour it."""

    NONE = "none"  # the aggregator gives no end date
    OK = "ok"
    SOON = "soon"
    URGENT = "urgent"
    EXPIRED = "expired"


def consent_days_left(expires_at: datetime, now: datetime) -> int:
    """Whole calendar days (UTC) from ``now`` to the consent's end; 0 on the last day,
    negative once past. Calendar days, not 24-hour periods, so that a reminder sent at 6:00
    and one sent at 23:00 the same day agree."""
    return (_utc(expires_at).date() - _utc(now).date()).days


def due_consent_reminder(
    expires_at: datetime | None,
    now: datetime,
    last_sent: int | None,
    thresholds: Sequence[int] = DEFAULT_REMINDER_DAYS,
) -> int | None:
    """The reminder threshold (e.g. 3 for "3 days left") to send now, or None.

    ``last_sent`` is the smallest threshold already sent for the *current* expiry date (the
    caller clears it when the consent is renewed and the date moves). Only the most urgent
    due reminder is returned: a connection first seen 2 days before the end gets the
    "3 days" reminder, not three e-mails. Nothing is sent once the consent has ended: that is
    an action-needed incident, alerted by :func:`assess_connection`.
    """
    if expires_at is None:
        return None
    days_left = consent_days_left(expires_at, now)
    if days_left < 0:
        return None
    due = [t for t in thresholds if days_left <= t and (last_sent is None or t < last_sent)]
    return min(due) if due else None


def consent_urgency(
    expires_at: datetime | None,
    now: datetime,
    *,
    soon_days: int = 15,
    urgent_days: int = 3,
) -> ConsentUrgency:
    """Colour of the consent end date: ok, soon (≤ ``soon_days``), urgent (≤ ``urgent_days``)
    or expired."""
    if expires_at is None:
        return ConsentUrgency.NONE
    if _utc(expires_at) <= _utc(now):
        return ConsentUrgency.EXPIRED
    days_left = consent_days_left(expires_at, now)
    if days_left <= urgent_days:
        return ConsentUrgency.URGENT
    if days_left <= soon_days:
        return ConsentUrgency.SOON
    return ConsentUrgency.OK


def _utc(value: datetime) -> datetime:
    # Odoo hands out naive UTC datetimes; the package speaks aware ones: accept both.
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


# --------------------------------------------------------------------------------------------
# Stall detection
# --------------------------------------------------------------------------------------------

DEFAULT_STALL_DAYS = 7
DEFAULT_STALL_LOOKBACK_DAYS = 90
#: Fewer distinct operation days than this in the lookback and the account is too quiet for
#: silence to mean anything (a savings account with two transfers a quarter).
DEFAULT_STALL_MIN_OPERATION_DAYS = 5


@dataclass(frozen=True)
class StallCheck:
    """Verdict of :func:`check_stall`, with the figures that explain it to a person."""

    stalled: bool
    #: Days since the last operation (None when the account never had one).
    days_silent: int | None
    #: Median gap in days between operation days over the lookback (None if too few).
    median_gap: float | None
    last_operation: date | None
    #: True when the account receives operations often enough for silence to be abnormal.
    usually_active: bool


def check_stall(
    operation_dates: Iterable[date],
    today: date,
    *,
    stall_days: int = DEFAULT_STALL_DAYS,
    lookback_days: int = DEFAULT_STALL_LOOKBACK_DAYS,
    min_operation_days: int = DEFAULT_STALL_MIN_OPERATION_DAYS,
) -> StallCheck:
    """Whether an account that usually receives operations has gone silent.

    The account "usually receives operations" when, over the ``lookback_days`` before
    ``today``, it has at least ``min_operation_days`` distinct operation days and the median
    gap between them is shorter than ``stall_days`` (so that ``stall_days`` of silence is
    clearly unusual for it). It is stalled when, in addition, its last operation is at least
    ``stall_days`` old. The caller only asks about active, linked accounts of connections
    that say ok: a broken connection has its own alert.
    """
    if stall_days < 1:
        raise ValueError("stall_days must be at least 1")
    start = today - timedelta(days=lookback_days)
    days = sorted({d for d in operation_dates if start <= d <= today})
    last = days[-1] if days else None
    silent = (today - last).days if last else None
    median_gap: float | None = None
    if len(days) >= 2:
        median_gap = float(statistics.median((b - a).days for a, b in itertools.pairwise(days)))
    usually_active = (
        len(days) >= min_operation_days and median_gap is not None and median_gap < stall_days
    )
    stalled = usually_active and silent is not None and silent >= stall_days
    return StallCheck(
        stalled=stalled,
        days_silent=silent,
        median_gap=median_gap,
        last_operation=last,
        usually_active=usually_active,
    )


# --------------------------------------------------------------------------------------------
# Rate-limit-aware scheduling
# --------------------------------------------------------------------------------------------


class LimitScope(str, enum.Enum):
    """What a rate limit counts over."""

    USER = "user"  # one aggregator user (one Odoo company or tenant)
    APP = "app"  # our whole application (all users, all databases)
    USER_TOKEN = "user_token"  # noqa: S105  (a scope name: token requests of one user)


@dataclass(frozen=True)
class RateLimit:
    """At most ``max_requests`` in any sliding window of ``window_seconds``."""

    scope: LimitScope
    max_requests: int
    window_seconds: float


def published_limits(kind: str) -> tuple[RateLimit, ...]:
    """The limits to respect for an aggregator kind.

    Bridge publishes 60 requests per user per 60 s, 2000 per application per 5 minutes and
    10 token requests per user per 60 s. Linxo publishes none: we assume half of Bridge's
    per-user budget and a tenth of its application budget, which keeps a nightly batch of a
    few hundred accounts well inside anything a partner API allows, and a 429 still backs
    off. The sandbox and unknown kinds get Bridge's figures, so demos behave like production.
    """
    if kind == "linxo":
        return (
            RateLimit(LimitScope.USER, 30, 60.0),
            RateLimit(LimitScope.APP, 200, 300.0),
            RateLimit(LimitScope.USER_TOKEN, 5, 60.0),
        )
    return (
        RateLimit(LimitScope.USER, 60, 60.0),
        RateLimit(LimitScope.APP, 2000, 300.0),
        RateLimit(LimitScope.USER_TOKEN, 10, 60.0),
    )


@dataclass(frozen=True)
class SyncJob:
    """One account to synchronise in the batch.

    ``requests`` is the estimated number of API calls (connection check, accounts,
    transaction pages); ``user_ref`` is the aggregator user it is made as.
    """

    key: str
    user_ref: str
    requests: int = 3


@dataclass(frozen=True)
class ScheduledJob:
    """A job with the earliest moment it may start, relative to the batch start."""

    job: SyncJob
    start_offset: float
    #: Token requests charged to this job (the user's first job fetches the token).
    token_requests: int = 0


@dataclass(frozen=True)
class BatchPlan:
    """A daily batch spread over time; :attr:`duration` is the last start offset."""

    jobs: tuple[ScheduledJob, ...]

    @property
    def duration(self) -> float:
        """Seconds between the first and the last job start."""
        return max((j.start_offset for j in self.jobs), default=0.0)

    def due(self, elapsed: float) -> tuple[ScheduledJob, ...]:
        """Jobs allowed to start once ``elapsed`` seconds of the batch have passed."""
        return tuple(j for j in self.jobs if j.start_offset <= elapsed)


@dataclass
class _Window:
    """A sliding-window counter used while planning (never shared outside one plan)."""

    limit: RateLimit
    events: deque[tuple[float, int]] = field(default_factory=deque)

    def earliest(self, at: float, cost: int) -> float:
        """Earliest time >= ``at`` at which ``cost`` more requests fit in the window.

        Every event already placed is at or before ``at`` (the planner only moves forward),
        so only the window ending at the candidate time matters.
        """
        if cost > self.limit.max_requests:
            raise ValueError(
                f"a job needing {cost} requests can never fit a limit of "
                f"{self.limit.max_requests} per {self.limit.window_seconds:g} s"
            )
        window = self.limit.window_seconds
        inside = [(when, count) for when, count in self.events if when > at - window]
        total = sum(count for _, count in inside)
        # Wait for the oldest requests to leave the window, one by one, until the cost fits.
        for when, count in inside:
            if total + cost <= self.limit.max_requests:
                return at
            total -= count
            at = max(at, when + window)
        return at

    def add(self, at: float, cost: int) -> None:
        """Record ``cost`` requests at ``at`` and forget those that left the window."""
        self.events.append((at, cost))
        while self.events and self.events[0][0] <= at - self.limit.window_seconds:
            self.events.popleft()


def plan_batch(
    jobs: Iterable[SyncJob],
    limits: Sequence[RateLimit],
    *,
    start_offset: float = 0.0,
    token_ttl: float = 7200.0,
) -> BatchPlan:
    """Give every job the earliest start that keeps all ``limits`` in every sliding window.

    A job's requests are counted as a burst at its start (a safe over-estimate). Each user
    fetches a token on its first job and again every ``token_ttl`` seconds (Bridge user
    tokens last 2 hours); token requests count for the user, application and token limits.
    Users are served fairly: at each step the job that can start the soonest goes next, in
    each user's own order, so a company with a hundred accounts does not hold back one with
    a single account.
    """
    queues: dict[str, deque[SyncJob]] = {}
    for job in jobs:
        queues.setdefault(job.user_ref, deque()).append(job)
    app_windows = [_Window(limit) for limit in limits if limit.scope is LimitScope.APP]
    user_windows: dict[str, list[_Window]] = {
        user: [_Window(limit) for limit in limits if limit.scope is not LimitScope.APP]
        for user in queues
    }
    token_at: dict[str, float] = {}
    now = start_offset
    planned: list[ScheduledJob] = []
    order = {user: index for index, user in enumerate(queues)}

    placed: dict[str, int] = dict.fromkeys(queues, 0)

    def candidate(user: str) -> tuple[float, tuple[int, int], int]:
        job = queues[user][0]
        tokens = 1 if user not in token_at or now - token_at[user] >= token_ttl else 0
        at = now
        # Re-check until one pass moves nothing: delaying for one limit may meet another.
        while True:
            before = at
            for window in app_windows:
                at = window.earliest(at, job.requests + tokens)
            for window in user_windows[user]:
                cost = tokens if window.limit.scope is LimitScope.USER_TOKEN else job.requests
                cost += tokens if window.limit.scope is LimitScope.USER else 0
                if cost:
                    at = window.earliest(at, cost)
            if at == before:
                # Ties go to the user served least so far: round robin at equal times.
                return at, (placed[user], order[user]), tokens

    heap = [(*candidate(user), user) for user in queues]
    heapq.heapify(heap)
    while heap:
        # Limits only tighten as jobs are placed, so a stale candidate time is a lower bound:
        # recompute the head and place it only if it is still the soonest.
        _, _, _, user = heapq.heappop(heap)
        at, rank, tokens = candidate(user)
        if heap and (at, rank) > heap[0][:2]:
            heapq.heappush(heap, (at, rank, tokens, user))
            continue
        job = queues[user].popleft()
        now = at
        for window in app_windows:
            window.add(at, job.requests + tokens)
        for window in user_windows[user]:
            if window.limit.scope is LimitScope.USER_TOKEN:
                if tokens:
                    window.add(at, tokens)
            else:
                window.add(at, job.requests + tokens)
        if tokens:
            token_at[user] = at
        placed[user] += 1
        planned.append(ScheduledJob(job=job, start_offset=at, token_requests=tokens))
        if queues[user]:
            heapq.heappush(heap, (*candidate(user), user))
    return BatchPlan(jobs=tuple(planned))


DEFAULT_BACKOFF_BASE = 30.0
DEFAULT_BACKOFF_CAP = 1800.0
DEFAULT_MAX_RATE_LIMIT_ATTEMPTS = 6


@dataclass(frozen=True)
class ResumePlan:
    """What to do after a 429: resume at :attr:`resume_at`, or leave it to the next run.

    Neither case is an error for the user: a rate limit means "later", and the cursor never
    moved past what was imported, so the next attempt picks up exactly where this one
    stopped.
    """

    resume_at: datetime
    attempt: int
    #: True when the retries of this batch are spent: the account waits for the next daily
    #: run (recorded in the run history as deferred, not failed).
    defer_to_next_run: bool


def plan_rate_limit_backoff(
    now: datetime,
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = DEFAULT_BACKOFF_BASE,
    cap: float = DEFAULT_BACKOFF_CAP,
    max_attempts: int = DEFAULT_MAX_RATE_LIMIT_ATTEMPTS,
) -> ResumePlan:
    """Turn the ``attempt``-th consecutive 429 (1 for the first) into a resume time.

    The vendor's ``Retry-After`` wins when given (never shorter than it says); otherwise the
    wait doubles from ``base`` up to ``cap``. After ``max_attempts`` the work is deferred to
    the next run instead of hammering the aggregator.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    wait = min(cap, base * (2 ** (attempt - 1)))
    if retry_after is not None:
        wait = max(float(retry_after), 0.0)
    return ResumePlan(
        resume_at=_utc(now) + timedelta(seconds=wait),
        attempt=attempt,
        defer_to_next_run=attempt >= max_attempts,
    )


#: Waits before retrying a window that failed for a passing reason (aggregator down, timeout,
#: broken answer): a quarter of an hour, an hour, four hours; then the next daily run.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (900.0, 3600.0, 14400.0)


def plan_failure_retry(
    now: datetime,
    attempt: int,
    *,
    delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
) -> ResumePlan:
    """When to try again after the ``attempt``-th consecutive passing failure (1 for the first).

    Only for failures that may pass without anyone doing anything (the error's ``retryable``);
    an action required from the user is never retried. Once ``delays`` are spent the account
    waits for the next daily run, so a long outage costs a handful of calls, not hundreds.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if attempt > len(delays):
        return ResumePlan(resume_at=_utc(now), attempt=attempt, defer_to_next_run=True)
    return ResumePlan(
        resume_at=_utc(now) + timedelta(seconds=float(delays[attempt - 1])),
        attempt=attempt,
        defer_to_next_run=False,
    )


def replan_after_rate_limit(
    plan: BatchPlan,
    done: Iterable[str],
    limits: Sequence[RateLimit],
    *,
    resume_offset: float,
    token_ttl: float = 7200.0,
) -> BatchPlan:
    """The rest of a batch after a 429, starting no earlier than ``resume_offset``.

    Jobs whose key is in ``done`` are dropped; the others keep their order and are spread
    again from the resume point with fresh windows (the vendor told us its own counters are
    full, so ours restart from its resume point).
    """
    finished = set(done)
    remaining = [j.job for j in plan.jobs if j.job.key not in finished]
    return plan_batch(remaining, limits, start_offset=resume_offset, token_ttl=token_ttl)


__all__ = [
    "DEFAULT_FAILURE_ALERT_DAYS",
    "DEFAULT_REMINDER_DAYS",
    "DEFAULT_STALL_DAYS",
    "INCIDENT_DISCONNECTED",
    "INCIDENT_TEMPORARY_FAILURE",
    "BatchPlan",
    "ConsentUrgency",
    "HealthDecision",
    "HealthRecord",
    "LimitScope",
    "RateLimit",
    "ResumePlan",
    "ScheduledJob",
    "StallCheck",
    "SyncJob",
    "assess_connection",
    "check_stall",
    "consent_days_left",
    "consent_urgency",
    "due_consent_reminder",
    "incident_key",
    "incident_reason",
    "plan_batch",
    "plan_rate_limit_backoff",
    "published_limits",
    "replan_after_rate_limit",
]

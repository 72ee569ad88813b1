"""The one retry policy of the worker, written as tables and tested without a broker.

Every answer of the cloud is first reduced to an ``OutcomeClass`` (``schemas.cloud_contract``,
one place); this module says what the worker does with it. Nothing here does I/O: the
services call ``decide_push`` / ``decide_query`` / the schedules and act on the result.

BILL.PUSH (``PUSH_ACTIONS``)

| outcome             | action           | document goes to                                     |
|---------------------|------------------|------------------------------------------------------|
| ``accepted``        | ``apply``        | ``pushed`` (first poll due soon)                     |
| ``rejected``        | ``reject``       | ``rejected`` with the cloud's errorCode + message    |
| ``duplicate``       | ``query``        | ``in_doubt``: a query decides, never a re-push       |
| ``unknown_outcome`` | ``query``        | ``in_doubt``                                         |
| ``transient``       | ``retry``        | ``draft`` + ``next_attempt_at``; ``failed`` when the |
|                     |                  | attempts are exhausted (``give_up``)                 |
| ``auth_expired``    | ``refresh_once`` | fresh token, same call once more; a second auth      |
|                     |                  | failure is ``pause_tenant``                          |
| ``config_error``    | ``pause_tenant`` | ``failed`` naming the setting to fix; tenant paused  |

BILL.INVOICE.QUERY / BILL.WITHDRAW (``QUERY_ACTIONS``): queries change nothing in the cloud,
so ``unknown_outcome`` and ``transient`` are both "ask again later"; ``duplicate`` cannot
happen and is treated as ``rejected`` would be (give up after the bounded tries).

| outcome           | action          |
|-------------------|-----------------|
| ``accepted``      | ``apply``       |
| ``transient`` / ``unknown_outcome`` | ``retry`` |
| ``auth_expired``  | ``refresh_once``|
| ``config_error``  | ``pause_tenant``|
| ``rejected`` / ``duplicate`` | ``reject`` (the caller decides: unknown bill → absent) |

The retry table (``RetryTable``, ``retry_table(settings)``): every retry in the system is
one row, built from ``Settings`` (``FAPIAO_RETRY__<KIND>__*`` and the older names that feed
it, ``schemas.settings``). ``python -m worker.retry_policy`` prints it for the environment.
The wait after failed attempt n is at most min(cap, base × factor^(n−1) + step × (n−1)),
drawn uniformly below that with full jitter; ``query`` walks the poll schedule instead.

| kind          | who retries, how                                | defaults                  |
|---------------|-------------------------------------------------|---------------------------|
| ``push``      | ``decide_push``: draft + ``next_attempt_at``    | 8 tries, 2 s ×2 ≤ 300 s,  |
|               | (the sweep sends it), then ``failed``           | full jitter               |
| ``query``     | BILL.INVOICE.QUERY again (in-doubt and polls):  | 5 s, 15 s … 4 h, then 6 h;|
|               | ``next_poll_at`` (poll_due)                     | in-doubt: 20 queries      |
| ``withdraw``  | BILL.WITHDRAW transient: ``next_attempt_at``    | no limit, every 30 s      |
| ``webhook``   | ERP notification: ``erp_outbox.next_attempt_at``| 12 tries, 5 s ×2 ≤ 600 s, |
|               | (short waits also a countdown), then parked     | full jitter               |
| ``reconcile`` | callback deferred: a countdown, then ``failed`` | 30 tries, 2 s +2 s ≤ 60 s |
| ``task``      | database/Redis error inside a task: Celery      | 6 tries, 2 s ×2 ≤ 30 s,   |
|               | retry (``worker.tasks``), a countdown           | full jitter               |
| ``publish``   | the broker refused a message: kombu's publish   | 3 tries, 0 s +0.2 s       |
|               | retry (``worker.enqueue``), in process          | ≤ 0.5 s                   |

Broker countdowns never carry long waits: a retry that may be long is a row with a due time
that a beat task picks up (docs/STACK.md: a countdown longer than the visibility timeout runs a
task again); the countdowns left are capped by ``Runtime.dispatch``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from schemas.cloud_contract import OutcomeClass
from schemas.settings import RetryRow, Settings

__all__ = [
    "PUSH_ACTIONS",
    "QUERY_ACTIONS",
    "Action",
    "Backoff",
    "Decision",
    "PollSchedule",
    "RetryKind",
    "RetryTable",
    "decide_push",
    "decide_query",
    "retry_table",
]


class Action(StrEnum):
    """What to do with an outcome (module docstring tables)."""

    APPLY = "apply"
    REJECT = "reject"
    QUERY = "query"
    RETRY = "retry"
    REFRESH_ONCE = "refresh_once"
    GIVE_UP = "give_up"
    PAUSE_TENANT = "pause_tenant"


PUSH_ACTIONS: Final[Mapping[OutcomeClass, Action]] = MappingProxyType(
    {
        OutcomeClass.ACCEPTED: Action.APPLY,
        OutcomeClass.REJECTED: Action.REJECT,
        OutcomeClass.DUPLICATE: Action.QUERY,
        OutcomeClass.UNKNOWN_OUTCOME: Action.QUERY,
        OutcomeClass.TRANSIENT: Action.RETRY,
        OutcomeClass.AUTH_EXPIRED: Action.REFRESH_ONCE,
        OutcomeClass.CONFIG_ERROR: Action.PAUSE_TENANT,
    }
)

QUERY_ACTIONS: Final[Mapping[OutcomeClass, Action]] = MappingProxyType(
    {
        OutcomeClass.ACCEPTED: Action.APPLY,
        OutcomeClass.REJECTED: Action.REJECT,
        OutcomeClass.DUPLICATE: Action.REJECT,
        OutcomeClass.UNKNOWN_OUTCOME: Action.RETRY,
        OutcomeClass.TRANSIENT: Action.RETRY,
        OutcomeClass.AUTH_EXPIRED: Action.REFRESH_ONCE,
        OutcomeClass.CONFIG_ERROR: Action.PAUSE_TENANT,
    }
)


@dataclass(frozen=True, slots=True)
class Backoff:
    """One row of the retry table: how long to wait after a failed attempt, and how often.

    The wait after failed attempt n (1-based) is at most
    ``min(cap, base · factor^(n−1) + step · (n−1))`` — or, with ``schedule_seconds``, the
    schedule's n-th delay and then the cap. With ``jitter`` (full jitter) the wait is drawn
    uniformly from [0, that ceiling]: a crowd of retries (every push of a tenant hitting 9999
    at once) spreads over the whole window instead of re-synchronising.
    ``max_attempts`` counts every try, the first included; 0 means no limit.
    """

    base_seconds: float
    cap_seconds: float
    max_attempts: int
    factor: float = 2.0
    step_seconds: float = 0.0
    jitter: bool = True
    schedule_seconds: tuple[float, ...] = ()

    @classmethod
    def from_row(cls, row: RetryRow) -> Backoff:
        return cls(
            base_seconds=row.base_seconds,
            cap_seconds=row.cap_seconds,
            max_attempts=row.max_attempts,
            factor=row.factor,
            step_seconds=row.step_seconds,
            jitter=row.jitter,
        )

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the wait after failed attempt number ``attempt`` (1-based)."""
        n = max(1, attempt)
        if self.schedule_seconds:
            wanted = self.schedule_seconds[n - 1] if n <= len(self.schedule_seconds) else None
            return float(self.cap_seconds if wanted is None else min(self.cap_seconds, wanted))
        exponent = min(n - 1, 62)
        grown = self.base_seconds * self.factor**exponent + self.step_seconds * (n - 1)
        return float(min(self.cap_seconds, grown))

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait after failed attempt number ``attempt`` (jittered when the row says so)."""
        ceiling = self.ceiling(attempt)
        seconds = (rng or random).uniform(0.0, ceiling) if self.jitter else ceiling
        return timedelta(seconds=seconds)

    def exhausted(self, attempt: int) -> bool:
        """True once ``attempt`` attempts have been made and none may follow."""
        return self.max_attempts > 0 and attempt >= self.max_attempts

    def ceilings(self, attempts: int) -> list[float]:
        """The ceilings after failed attempts 1 … ``attempts`` (docs, tests)."""
        return [self.ceiling(n) for n in range(1, attempts + 1)]


@dataclass(frozen=True, slots=True)
class PollSchedule:
    """When to ask BILL.INVOICE.QUERY again: the configured delays in turn, then the cap.

    ``poll_count`` is how many queries were already made in the current state; the
    default (settings) goes 5 s, 15 s, 1 min, 5 min, 15 min, 1 h, 2 h, 4 h, then every 6 h.
    """

    delays_seconds: tuple[float, ...]
    cap_seconds: float
    alert_after: timedelta

    def delay(self, poll_count: int) -> timedelta:
        index = max(0, poll_count)
        seconds = (
            self.delays_seconds[index] if index < len(self.delays_seconds) else self.cap_seconds
        )
        return timedelta(seconds=min(seconds, self.cap_seconds))

    def overdue(self, age: timedelta) -> bool:
        """A document waiting this long for its invoices deserves an operator's eyes."""
        return age >= self.alert_after


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for one outcome, plus the wait before trying again (``retry`` only)."""

    action: Action
    delay: timedelta | None = None


def decide_push(
    outcome: OutcomeClass,
    *,
    attempt: int,
    backoff: Backoff,
    auth_refreshed: bool,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after BILL.PUSH attempt number ``attempt`` came back as ``outcome``.

    ``auth_refreshed`` is True when this answer already came with a token fetched after an
    auth failure: a second auth failure is not an expired token but wrong configuration.
    """
    action = PUSH_ACTIONS[outcome]
    if action is Action.REFRESH_ONCE and auth_refreshed:
        return Decision(Action.PAUSE_TENANT)
    if action is Action.RETRY:
        if backoff.exhausted(attempt):
            return Decision(Action.GIVE_UP)
        return Decision(Action.RETRY, backoff.delay(attempt, rng))
    return Decision(action)


def decide_query(
    outcome: OutcomeClass,
    *,
    auth_refreshed: bool,
) -> Decision:
    """What to do with a BILL.INVOICE.QUERY / BILL.WITHDRAW answer; the caller schedules retries."""
    action = QUERY_ACTIONS[outcome]
    if action is Action.REFRESH_ONCE and auth_refreshed:
        return Decision(Action.PAUSE_TENANT)
    return Decision(action)


class RetryKind(StrEnum):
    """The rows of the retry table (module docstring)."""

    PUSH = "push"
    QUERY = "query"
    WITHDRAW = "withdraw"
    WEBHOOK = "webhook"
    RECONCILE = "reconcile"
    TASK = "task"
    PUBLISH = "publish"


@dataclass(frozen=True, slots=True)
class RetryTable:
    """Every retry of the system, one ``Backoff`` per ``RetryKind`` (module docstring)."""

    rows: Mapping[RetryKind, Backoff] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = set(RetryKind) - set(self.rows)
        if missing:
            raise ValueError(f"retry table without rows for {sorted(missing)}")

    def __getitem__(self, kind: RetryKind) -> Backoff:
        return self.rows[kind]

    def __iter__(self) -> Iterator[tuple[RetryKind, Backoff]]:
        return ((kind, self.rows[kind]) for kind in RetryKind)

    @property
    def push(self) -> Backoff:
        return self.rows[RetryKind.PUSH]

    @property
    def query(self) -> Backoff:
        return self.rows[RetryKind.QUERY]

    @property
    def withdraw(self) -> Backoff:
        return self.rows[RetryKind.WITHDRAW]

    @property
    def webhook(self) -> Backoff:
        return self.rows[RetryKind.WEBHOOK]

    @property
    def reconcile(self) -> Backoff:
        return self.rows[RetryKind.RECONCILE]

    @property
    def task(self) -> Backoff:
        return self.rows[RetryKind.TASK]

    @property
    def publish(self) -> Backoff:
        return self.rows[RetryKind.PUBLISH]

    def render(self, attempts: int = 6) -> str:
        """The table as text: the columns and the first ``attempts`` ceilings of each row."""
        lines = [
            f"{'kind':<10} {'max':>4} {'base':>7} {'factor':>6} {'step':>6} {'cap':>8}"
            f" {'jitter':>6}  ceilings after failed attempts 1…{attempts} (s)"
        ]
        for kind, row in self:
            ceilings = ", ".join(f"{c:g}" for c in row.ceilings(attempts))
            growth = (
                ("schedule", "")
                if row.schedule_seconds
                else (f"{row.factor:g}", f"{row.step_seconds:g}")
            )
            lines.append(
                f"{kind.value:<10} {row.max_attempts or '∞':>4} {row.base_seconds:>7g}"
                f" {growth[0]:>6} {growth[1]:>6} {row.cap_seconds:>8g}"
                f" {'full' if row.jitter else 'no':>6}  {ceilings}"
            )
        return "\n".join(lines)


def retry_table(settings: Settings) -> RetryTable:
    """The retry table of ``settings`` (``FAPIAO_RETRY__*`` and the older names feeding it)."""
    rows = {RetryKind(kind): Backoff.from_row(settings.retry_row(kind)) for kind in (
        "push", "withdraw", "webhook", "reconcile", "task", "publish")}  # fmt: skip
    schedule = tuple(float(s) for s in settings.poll.schedule_seconds)
    rows[RetryKind.QUERY] = Backoff(
        base_seconds=schedule[0],
        cap_seconds=float(settings.poll.cap_seconds),
        max_attempts=settings.in_doubt.max_queries,
        factor=1.0,
        jitter=False,
        schedule_seconds=schedule,
    )
    return RetryTable(MappingProxyType(rows))


if __name__ == "__main__":
    print(retry_table(Settings.load()).render())

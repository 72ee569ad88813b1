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

Schedules (all compressible through settings for tests)

| schedule         | shape                                               | default            |
|------------------|-----------------------------------------------------|--------------------|
| push retry       | full jitter: uniform(0, min(cap, base·2^(n−1)))     | 2 s, cap 300 s, 8  |
| poll             | configured delays in turn, then the cap; alert late | 5 s … 4 h, cap 6 h |
| in-doubt         | poll schedule, bounded by tries and age → failed    | 20 tries / 1 day   |
| ERP webhook      | full jitter, capped; parked after max attempts      | 5 s, cap 1 h, 12   |

Broker countdowns never carry these waits: a retry is a row with a due time that a beat task
picks up (docs/STACK.md: a countdown longer than the visibility timeout runs a task again).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from schemas.cloud_contract import OutcomeClass

__all__ = [
    "PUSH_ACTIONS",
    "QUERY_ACTIONS",
    "Action",
    "Backoff",
    "Decision",
    "PollSchedule",
    "decide_push",
    "decide_query",
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
    """Capped exponential backoff with full jitter (delay drawn from [0, min(cap, base·2^(n−1))]).

    Full jitter spreads a crowd of retries (e.g. every push of a tenant hitting 9999 at once)
    over the whole window instead of re-synchronising them.
    """

    base_seconds: float
    cap_seconds: float
    max_attempts: int

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
        exponent = max(0, min(attempt - 1, 62))
        return float(min(self.cap_seconds, self.base_seconds * (2**exponent)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """A jittered delay after failed attempt number ``attempt``."""
        draw = (rng or random).uniform(0.0, self.ceiling(attempt))
        return timedelta(seconds=draw)

    def exhausted(self, attempt: int) -> bool:
        """True once ``attempt`` attempts have been made and none may follow."""
        return attempt >= self.max_attempts


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

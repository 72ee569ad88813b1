"""Fault injection: what can go wrong in the simulated cloud, and the seeded dice that decide.

Every fault is a number: a probability in ``[0, 1]`` (rolled independently at each chance) or a
value (seconds, milliseconds). All are off (0) by default. They are set at start
(``--faults push_5xx_before=0.1``) and at run time (``PUT``/``PATCH /_sim/faults``). One
``random.Random`` seeded with ``--seed`` rolls every die, so a run with the same seed and the
same sequence of calls misbehaves the same way.

| fault | kind | rolled at | what happens |
|---|---|---|---|
| ``latency_ms`` | value | every cloud call | fixed delay before answering |
| ``latency_jitter_ms`` | value | every cloud call | plus a uniform delay in ``[0, jitter]`` |
| ``token_5xx`` | prob | token calls | HTTP 503 before processing |
| ``api_5xx_before`` | prob | openApi call | HTTP 503 before processing |
| ``push_5xx_before`` | prob | BILL.PUSH | HTTP 502 before processing (nothing stored) |
| ``drop_before`` | prob | BILL.PUSH | connection closed, no response, nothing stored |
| ``push_5xx_after_commit`` | prob | BILL.PUSH | bills stored, then HTTP 504 (unknown outcome) |
| ``drop_after_commit`` | prob | BILL.PUSH | bills stored, then connection closed, no response |
| ``push_system_error`` | prob | BILL.PUSH | HTTP 200, errorCode ``9999`` 系统异常, nothing stored |
| ``push_system_error_after_commit`` | prob | BILL.PUSH | bills stored, then the same ``9999`` |
| ``accept_duplicate_push`` | prob | push of a live billNo | accepted anyway: two live bills (a) |
| ``token_expire`` | prob | openApi call | the presented access_token expires now |
| ``auth_fail`` | prob | openApi call | auth-expired answer although the token is valid |
| ``token_ttl`` | value (s) | token issue | lifetime of new tokens (0 = configured TTL) |
| ``issue_fail`` | prob | bill issuance | every invoice fails, realistic ``issueErrorMessage`` |
| ``issue_partial`` | prob | split-bill issuance | some, never all, invoices fail |
| ``callback_drop`` | prob | callback | never sent |
| ``callback_duplicate`` | prob | callback | delivered twice |
| ``callback_delay`` | prob | callback | first attempt waits ``callback_delay_s`` |
| ``callback_delay_s`` | value (s) | | the delay used by ``callback_delay`` |
| ``callback_reorder`` | prob | issuance | its callbacks are sent in reverse order |
| ``callback_before_response`` | prob | auto-issued push | issued, called back, then answered |
| ``quota_warning`` | prob | per-bill callback | ``bizControl.isWarning``, low month limit |

(a) the double-issue detector (``/_sim/stats`` ``doubleIssue.live_twice``) reports it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from schemas.cloud_contract import ISSUE_ERROR_MESSAGES

__all__ = [
    "FAULT_NAMES",
    "ISSUE_ERROR_MESSAGES",
    "PROBABILITY_FAULTS",
    "FaultDice",
    "FaultPlan",
    "FaultSpecError",
    "parse_fault_spec",
]


class FaultSpecError(ValueError):
    """A fault specification could not be understood (unknown name, bad number, out of range)."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The current fault settings; immutable, replaced as a whole when changed."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    token_5xx: float = 0.0
    api_5xx_before: float = 0.0
    push_5xx_before: float = 0.0
    drop_before: float = 0.0
    push_5xx_after_commit: float = 0.0
    drop_after_commit: float = 0.0
    push_system_error: float = 0.0
    push_system_error_after_commit: float = 0.0
    accept_duplicate_push: float = 0.0
    token_expire: float = 0.0
    auth_fail: float = 0.0
    token_ttl: float = 0.0
    issue_fail: float = 0.0
    issue_partial: float = 0.0
    callback_drop: float = 0.0
    callback_duplicate: float = 0.0
    callback_delay: float = 0.0
    callback_delay_s: float = 0.0
    callback_reorder: float = 0.0
    callback_before_response: float = 0.0
    quota_warning: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultSpecError(f"fault {f.name!r} must be a number, got {value!r}")
            if value < 0:
                raise FaultSpecError(f"fault {f.name!r} must not be negative, got {value}")
            if f.name in PROBABILITY_FAULTS and value > 1:
                raise FaultSpecError(f"fault {f.name!r} is a probability in [0, 1], got {value}")
            object.__setattr__(self, f.name, float(value))

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> FaultPlan:
        """Build a plan from ``name=value`` strings (the ``--faults`` option)."""
        return cls().updated(dict(parse_fault_spec(spec) for spec in specs))

    def updated(self, changes: Mapping[str, Any]) -> FaultPlan:
        """A copy with ``changes`` applied; unknown names raise ``FaultSpecError``."""
        unknown = sorted(set(changes) - set(FAULT_NAMES))
        if unknown:
            raise FaultSpecError(
                f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULT_NAMES)}"
            )
        return dataclasses.replace(self, **dict(changes))

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def active(self) -> dict[str, float]:
        """Only the faults that are switched on."""
        return {name: value for name, value in self.as_dict().items() if value}

    def as_json(self, *, active_only: bool = False) -> dict[str, Decimal]:
        """Values as exact Decimals (``dumps_exact`` writes no floats): 0.1 → ``0.1``."""
        values = self.active() if active_only else self.as_dict()
        return {name: Decimal(repr(value)) for name, value in values.items()}


FAULT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(FaultPlan))
_VALUE_FAULTS = frozenset({"latency_ms", "latency_jitter_ms", "token_ttl", "callback_delay_s"})
PROBABILITY_FAULTS: frozenset[str] = frozenset(FAULT_NAMES) - _VALUE_FAULTS


def parse_fault_spec(spec: str) -> tuple[str, float]:
    """``"push_5xx_before=0.1"`` → ``("push_5xx_before", 0.1)``; a bare name means 1."""
    name, sep, raw = spec.partition("=")
    name = name.strip()
    if name not in FAULT_NAMES:
        raise FaultSpecError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
    if not sep:
        return name, 1.0
    try:
        return name, float(raw)
    except ValueError:
        raise FaultSpecError(f"fault {name!r}: {raw!r} is not a number") from None


class FaultDice:
    """Rolls the plan's probabilities with one seeded generator.

    ``plan`` is swapped atomically by the admin routes; readers always see one whole plan.
    """

    def __init__(self, plan: FaultPlan | None = None, seed: int | None = None) -> None:
        self.plan = plan or FaultPlan()
        self._random = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        self._random.seed(seed)

    def roll(self, name: str) -> bool:
        """True when fault ``name`` happens this time."""
        probability: float = getattr(self.plan, name)
        if probability <= 0.0:
            return False
        if probability >= 1.0:
            return True
        return self._random.random() < probability

    def latency_s(self) -> float:
        """Seconds to wait before answering a cloud call (0 when latency faults are off)."""
        plan = self.plan
        if not plan.latency_ms and not plan.latency_jitter_ms:
            return 0.0
        jitter = self._random.uniform(0.0, plan.latency_jitter_ms)
        return (plan.latency_ms + jitter) / 1000.0

    def choice(self, options: tuple[str, ...]) -> str:
        return self._random.choice(options)

    def randint(self, low: int, high: int) -> int:
        return self._random.randint(low, high)

    def sample_indices(self, count: int, k: int) -> list[int]:
        return sorted(self._random.sample(range(count), k))

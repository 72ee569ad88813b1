"""The credit quota (授信额度) of each tenant and the simulator's clock.

The cloud reports a tenant's remaining quota in ``bizControl`` of INVOICE.OPEN callbacks
(``daySurplusLimit``, ``monthSurplusLimit``, ``isWarning``; docs/CLOUD-CONTRACT.md §9.1 [D S7]);
how it is counted is not public, so this is the simulator's reading [G]:

| rule | detail |
|---|---|
| limits | per tenant, a day and a month limit, yuan incl. tax; none = unlimited (a) |
| consumed by | every issued blue invoice, its 价税合计; a red one neither uses nor refunds |
| refusal | issuance beyond the day or month remainder fails for the whole bill (b) |
| periods | the calendar day and month of Asia/Shanghai on the simulator's clock |
| isWarning | a remainder below ``warn_ratio`` (default ``QUOTA_WARNING_RATIO``, 10 %) |

(a) ``--quota TENANT=DAY:MONTH``, ``PUT /_sim/quota``. (b) ``issueErrorMessage``
``QUOTA_ISSUE_ERROR_MESSAGE`` (授信额度不足); nothing is consumed.

``SimClock`` is wall-clock time plus an offset an admin sets (``PUT /_sim/clock``), so tests
cross a day or month boundary without sleeping. Asia/Shanghai has had no daylight saving
since 1991: a fixed UTC+8 offset is exact and needs no tz database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.cloud_contract import QUOTA_WARNING_RATIO

__all__ = ["Quota", "QuotaBook", "QuotaError", "SimClock", "Surplus", "parse_quota_option"]

_SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
_CENT = Decimal("0.01")


class QuotaError(ValueError):
    """A quota that is not two non-negative amounts (and a ratio in [0, 1])."""


class SimClock:
    """Wall-clock seconds plus an admin offset."""

    def __init__(self) -> None:
        self.offset_seconds = 0.0

    def now(self) -> float:
        return time.time() + self.offset_seconds

    def shanghai(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC).astimezone(_SHANGHAI)

    def as_json(self) -> dict[str, Any]:
        return {
            "offset_seconds": Decimal(repr(self.offset_seconds)),
            "now": self.shanghai().isoformat(timespec="seconds"),
        }


def _amount(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise QuotaError(f'{name} must be an amount in yuan such as "1000.00", got {value!r}')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise QuotaError(f"{name} must be an amount in yuan, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise QuotaError(f"{name} must be a non-negative amount, got {value!r}")
    return amount.quantize(_CENT)


@dataclass(frozen=True, slots=True)
class Quota:
    day: Decimal
    month: Decimal
    warn_ratio: Decimal = QUOTA_WARNING_RATIO

    @classmethod
    def from_json(cls, body: Any) -> Quota:
        """``{"day": "1000.00", "month": "20000.00", "warn_ratio": "0.1"}`` (ratio optional)."""
        if not isinstance(body, dict) or "day" not in body or "month" not in body:
            raise QuotaError('a quota is {"day": "<yuan>", "month": "<yuan>"[, "warn_ratio": r]}')
        ratio = body.get("warn_ratio", QUOTA_WARNING_RATIO)
        try:
            warn = Decimal(str(ratio))
        except InvalidOperation:
            raise QuotaError(f"warn_ratio must be a number in [0, 1], got {ratio!r}") from None
        if isinstance(ratio, bool) or not warn.is_finite() or not 0 <= warn <= 1:
            raise QuotaError(f"warn_ratio must be a number in [0, 1], got {ratio!r}")
        return cls(_amount(body["day"], "day"), _amount(body["month"], "month"), warn)

    def as_json(self) -> dict[str, Decimal]:
        return {"day": self.day, "month": self.month, "warn_ratio": self.warn_ratio}


def parse_quota_option(spec: str) -> tuple[str, Quota]:
    """``"demo=1000:20000"`` (the ``--quota`` option) → ``("demo", Quota(1000, 20000))``."""
    tenant, sep, amounts = spec.partition("=")
    day, colon, month = amounts.partition(":")
    if not sep or not colon or not tenant.strip():
        raise QuotaError(f"{spec!r} is not TENANT=DAY:MONTH (yuan incl. tax), e.g. demo=1000:20000")
    return tenant.strip(), Quota(_amount(day, "day"), _amount(month, "month"))


@dataclass(frozen=True, slots=True)
class Surplus:
    """What is left of a tenant's quota now; ``limited`` False for an unlimited tenant."""

    limited: bool
    day: Decimal
    month: Decimal
    warning: bool


class QuotaBook:
    """Limits and consumption per tenant, by Asia/Shanghai day and month."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.limits: dict[str, Quota] = {}
        self._used: dict[tuple[str, str], Decimal] = {}  # (tenant, "2026-12-06" / "2026-12")

    def _periods(self) -> tuple[str, str]:
        today = self.clock.shanghai().date()
        return today.isoformat(), today.isoformat()[:7]

    def set(self, tenant: str, quota: Quota | None) -> None:
        if quota is None:
            self.limits.pop(tenant, None)
        else:
            self.limits[tenant] = quota

    def used(self, tenant: str) -> tuple[Decimal, Decimal]:
        day, month = self._periods()
        zero = Decimal("0.00")
        return self._used.get((tenant, day), zero), self._used.get((tenant, month), zero)

    def surplus(self, tenant: str) -> Surplus:
        quota = self.limits.get(tenant)
        if quota is None:
            return Surplus(False, Decimal("0.00"), Decimal("0.00"), False)
        day_used, month_used = self.used(tenant)
        day = max(quota.day - day_used, Decimal("0.00"))
        month = max(quota.month - month_used, Decimal("0.00"))
        warning = day < quota.day * quota.warn_ratio or month < quota.month * quota.warn_ratio
        return Surplus(True, day, month, warning)

    def refuses(self, tenant: str, amount: Decimal) -> bool:
        """Would issuing ``amount`` (incl. tax) exceed the day or month remainder?"""
        left = self.surplus(tenant)
        return left.limited and amount > min(left.day, left.month)

    def consume(self, tenant: str, amount: Decimal) -> None:
        if tenant not in self.limits or amount <= 0:
            return
        for period in self._periods():
            key = (tenant, period)
            self._used[key] = self._used.get(key, Decimal("0.00")) + amount

    def clear_usage(self) -> None:
        self._used.clear()

    def as_json(self) -> dict[str, Any]:
        """Every limited tenant: its limits, what is used and left this day and month."""
        day, month = self._periods()
        result: dict[str, Any] = {}
        for tenant, quota in sorted(self.limits.items()):
            used_day, used_month = self.used(tenant)
            left = self.surplus(tenant)
            result[tenant] = {
                **quota.as_json(),
                "date": day,
                "monthOf": month,
                "dayUsed": used_day,
                "monthUsed": used_month,
                "daySurplusLimit": left.day,
                "monthSurplusLimit": left.month,
                "isWarning": left.warning,
            }
        return result

    def state(self) -> dict[str, Any]:
        return {
            "limits": {
                t: {k: str(v) for k, v in q.as_json().items()} for t, q in self.limits.items()
            },
            "used": [[t, p, str(v)] for (t, p), v in self._used.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        for tenant, body in state.get("limits", {}).items():
            self.limits[tenant] = Quota.from_json(body)
        for tenant, period, value in state.get("used", []):
            self._used[(tenant, period)] = Decimal(value)

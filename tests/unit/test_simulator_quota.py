"""The credit quota and the simulator's clock (simulator.quota), without HTTP."""

from __future__ import annotations

from decimal import Decimal

import pytest

from simulator.quota import Quota, QuotaBook, QuotaError, SimClock, parse_quota_option


def test_consumption_refusal_warning_and_the_day_boundary() -> None:
    clock = SimClock()
    book = QuotaBook(clock)
    assert not book.refuses("demo", Decimal("1e9"))  # unlimited without a quota
    book.set("demo", Quota(Decimal("250.00"), Decimal("1000.00")))
    book.consume("demo", Decimal("113.00"))
    book.consume("demo", Decimal("113.00"))
    left = book.surplus("demo")
    assert (left.day, left.month, left.warning) == (Decimal("24.00"), Decimal("774.00"), True)
    assert book.refuses("demo", Decimal("24.01")) and not book.refuses("demo", Decimal("24.00"))
    before = book.as_json()["demo"]
    clock.offset_seconds = 86400.0
    after = book.as_json()["demo"]
    assert after["date"] > before["date"] and after["dayUsed"] == Decimal("0.00")
    assert after["monthUsed"] == (
        Decimal("226.00") if after["monthOf"] == before["monthOf"] else Decimal("0.00")
    )
    clock.offset_seconds = 40 * 86400.0  # another month, whatever today is
    assert book.used("demo") == (Decimal("0.00"), Decimal("0.00"))


def test_state_round_trip() -> None:
    book = QuotaBook(SimClock())
    book.set("demo", Quota(Decimal("10"), Decimal("20"), Decimal("0.5")))
    book.consume("demo", Decimal("3.00"))
    again = QuotaBook(SimClock())
    again.restore(book.state())
    assert again.as_json() == book.as_json()


@pytest.mark.parametrize(
    "spec", ["demo", "demo=100", "=1:2", "demo=x:2", "demo=-1:2", "demo=1:nan"]
)
def test_quota_option_refusals(spec: str) -> None:
    with pytest.raises(QuotaError):
        parse_quota_option(spec)


def test_quota_option() -> None:
    assert parse_quota_option(" demo =1000:20000.5") == (
        "demo",
        Quota(Decimal("1000.00"), Decimal("20000.50")),
    )
    with pytest.raises(QuotaError, match="warn_ratio"):
        Quota.from_json({"day": "1", "month": "2", "warn_ratio": "2"})

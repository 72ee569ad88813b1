"""What the bridge believes of a ``bizControl`` (callbacks are unsigned): within an Asia/Shanghai
day (month) the surplus only goes down, so a forged answer can neither raise the quota nor let
a held bill through; a new period starts afresh; a hold ends at the boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from store.db import unit_of_work
from store.models import TenantQuota
from store.quota import QuotaGate, observe, record_exhausted

SELLER = "91310000SIM0000001"
# 10:00 in Shanghai on 2026-12-15: the day and the month have room on both sides.
MORNING = datetime(2026, 12, 15, 2, 0, tzinfo=UTC)


def _observe(sessions: sessionmaker[Session], day: str, month: str, at: datetime,
             warning: bool = False) -> bool:  # fmt: skip
    with unit_of_work(sessions) as session:
        return observe(
            session, "demo", SELLER, day=Decimal(day), month=Decimal(month),
            is_warning=warning, now=at,
        )  # fmt: skip


def _row(sessions: sessionmaker[Session]) -> TenantQuota:
    with sessions() as session:
        row = session.get(TenantQuota, ("demo", SELLER))
        assert row is not None
        return row


def _admits(sessions: sessionmaker[Session], amount: str, at: datetime) -> bool:
    with unit_of_work(sessions) as session:
        gate = QuotaGate.load(session, [("demo", SELLER)], at)
        admitted = gate.admit("demo", SELLER, Decimal(amount)) is None
        gate.write_holds()
        return admitted


def test_a_higher_answer_within_the_day_is_not_believed(
    session_factory: sessionmaker[Session],
) -> None:
    _observe(session_factory, "100.00", "1000.00", MORNING)
    assert not _admits(session_factory, "113.00", MORNING)  # held
    assert _row(session_factory).held

    # A forged callback claims plenty: the stored surplus stays; the hold is re-checked
    # (released for the push to look again) and the bill is held again.
    _observe(session_factory, "99999.00", "99999.00", MORNING + timedelta(minutes=5))
    row = _row(session_factory)
    assert (row.day_surplus, row.month_surplus) == (Decimal("100.00"), Decimal("1000.00"))
    assert not _admits(session_factory, "113.00", MORNING + timedelta(minutes=6))

    # Lower answers are taken; a warning stays for the day even if a later answer denies it.
    _observe(session_factory, "80.00", "900.00", MORNING + timedelta(hours=1), warning=True)
    _observe(session_factory, "90.00", "950.00", MORNING + timedelta(hours=2))
    row = _row(session_factory)
    assert (row.day_surplus, row.month_surplus, row.is_warning) == (
        Decimal("80.00"),
        Decimal("900.00"),
        True,
    )


def test_the_day_and_the_month_start_afresh(session_factory: sessionmaker[Session]) -> None:
    _observe(session_factory, "10.00", "500.00", MORNING, warning=True)
    tomorrow = MORNING + timedelta(days=1)
    assert _admits(session_factory, "113.00", tomorrow)  # yesterday's day surplus is void
    assert not _admits(session_factory, "600.00", tomorrow)  # the month's still counts
    _observe(session_factory, "400.00", "700.00", tomorrow)
    row = _row(session_factory)
    # A new day: its first answer as it comes; the same month: still only lower.
    assert (row.day_surplus, row.month_surplus, row.is_warning) == (
        Decimal("400.00"),
        Decimal("500.00"),
        False,
    )
    next_month = datetime(2027, 1, 1, 2, 0, tzinfo=UTC)
    _observe(session_factory, "400.00", "700.00", next_month)
    assert _row(session_factory).month_surplus == Decimal("700.00")


def test_an_exhausted_quota_holds_until_the_next_day_in_shanghai(
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as session:
        until = record_exhausted(session, "demo", SELLER, reason="授信额度不足", now=MORNING)
    assert until == datetime(2026, 12, 15, 16, 0, tzinfo=UTC)  # 00:00 on the 16th, UTC+8
    assert not _admits(session_factory, "1.00", until - timedelta(seconds=1))
    assert _admits(session_factory, "-113.00", MORNING)  # a red bill uses no quota
    # A callback with room cannot lift it (the day's surplus is 0, lower only) …
    assert not _observe(session_factory, "500.00", "900.00", MORNING + timedelta(minutes=1))
    assert not _admits(session_factory, "1.00", MORNING + timedelta(minutes=2))
    # … the boundary does.
    assert _admits(session_factory, "113.00", until + timedelta(seconds=1))

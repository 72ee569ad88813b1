"""The credit quota (授信额度) per tenant and seller (`tenant_quota`), and the push hold it causes.

The cloud reports what is left of a tenant's quota in ``bizControl`` (``daySurplusLimit``,
``monthSurplusLimit``, ``isWarning``; docs/CLOUD-CONTRACT.md §15) and refuses an issuance
beyond it with 授信额度不足. The bridge keeps the latest believable answer per (tenant,
seller) and holds pushes that answer cannot cover: the documents wait in ``draft``
(``last_error_code = "quota_held"``, ``next_attempt_at`` = when the hold ends), nothing fails.

What is believed (callbacks are unsigned: anyone who can reach the receiver can send one)

| answer                                  | effect on the stored surplus                       |
|-----------------------------------------|----------------------------------------------------|
| ``bizControl`` of a callback            | LOWER only: within the same Asia/Shanghai day      |
|                                         | (month) the day (month) surplus becomes the        |
|                                         | smaller of the stored and the new value; a new     |
|                                         | period's first answer is taken as it comes         |
| issuance failed with 授信额度不足          | day surplus 0; held until the next day             |
| the day (month) turns                   | the stored day (month) surplus no longer counts    |
| operator resume                         | hold cleared and the surplus forgotten (unknown)   |

So a forged ``bizControl`` can never raise the quota or release a hold: a higher value than
the one stored for the period is ignored; the worst a forged LOW value can do is hold the
tenant until the day turns or an operator resumes (visible: ``fapiao tenants list``, the
``fapiao_quota_held`` metric). A genuine rise within a day (the quota raised in the cloud) is
applied by an operator's ``fapiao tenants resume``. A hold is also released whenever a new
answer with any room left is recorded (bills reserved meanwhile may have been issued): the
push re-checks, and holds again if there is still not enough.

Available for the next bill = min(day surplus of today, month surplus of this month) − the
reservation: the 价税合计 of the tenant/seller's documents pushed and not yet issued
(``pushing``, ``pushed``, ``in_doubt``) since the start of the answer's Asia/Shanghai day, so a
batch in flight cannot overrun it. Why the whole day and not just since the answer: when the
cloud counted, bills pushed shortly before the answer may not have been issued yet, and the
answer's own time in the cloud is unknown. The cost is caution: a bill issued but not yet
reconciled is counted twice until its callback or query arrives (which records a new answer
and releases the hold for a re-check). A bill held only because of bills in flight is due
again after ``QUOTA_RECHECK`` (10 min) — not every second, and not only at the boundary, since
a callback style without ``bizControl`` never releases a hold. Unknown (no row, or only stale
periods): nothing is held.

Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final, cast

from sqlalchemy import Table, and_, case, func, literal, null, or_, select, true, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from schemas.cloud_contract import QUOTA_TIMEZONE
from store.columns import Money, utcnow
from store.lifecycle import expire_loaded
from store.models import Document, TenantQuota
from store.states import QUOTA_EXHAUSTED, QUOTA_HELD, DocumentStatus

__all__ = [
    "QUOTA_EXHAUSTED",
    "QUOTA_HELD",
    "QUOTA_RECHECK",
    "Admission",
    "QuotaGate",
    "available",
    "hold_documents",
    "next_boundary",
    "observe",
    "quota_rows",
    "record_exhausted",
    "release",
    "shanghai_day",
]


# Asia/Shanghai (QUOTA_TIMEZONE) has had no daylight saving since 1991: a fixed UTC+8 offset
# is exact and needs no tz database (the simulator counts the same way).
SHANGHAI: Final = timezone(timedelta(hours=8), QUOTA_TIMEZONE)
_ZERO: Final = Decimal("0.00")
# A bill held only because of bills in flight is looked at again after this (or at the
# boundary, if sooner): their issuance frees no quota, but it ends their reservation.
QUOTA_RECHECK: Final = timedelta(minutes=10)
_IN_FLIGHT: Final = (
    DocumentStatus.pushing.value,
    DocumentStatus.pushed.value,
    DocumentStatus.in_doubt.value,
)
_documents = cast("Table", Document.__table__)


def shanghai_day(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


def _next_day(now: datetime) -> datetime:
    local = now.astimezone(SHANGHAI)
    start = datetime(local.year, local.month, local.day, tzinfo=SHANGHAI) + timedelta(days=1)
    return start.astimezone(UTC)


def _next_month(now: datetime) -> datetime:
    local = now.astimezone(SHANGHAI)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=SHANGHAI).astimezone(UTC)


def next_boundary(now: datetime, *, month: bool = False) -> datetime:
    """When the next Asia/Shanghai day (or month) starts, in UTC."""
    return _next_month(now) if month else _next_day(now)


def _same_day(a: datetime, b: datetime) -> bool:
    return shanghai_day(a) == shanghai_day(b)


def _same_month(a: datetime, b: datetime) -> bool:
    da, db = shanghai_day(a), shanghai_day(b)
    return (da.year, da.month) == (db.year, db.month)


def available(row: TenantQuota, now: datetime) -> tuple[Decimal | None, bool]:
    """What the stored answer still says is left now (None: unknown), and whether the month
    (not the day) is the binding limit."""
    if row.observed_at is None:
        return None, False
    day = row.day_surplus if _same_day(row.observed_at, now) else None
    month = row.month_surplus if _same_month(row.observed_at, now) else None
    if day is None and month is None:
        return None, False
    if day is None:
        return month, True
    if month is None or day <= month:
        return day, False
    return month, True


def _upsert(session: Session, tenant: str, seller: str, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(TenantQuota).values(tenant=tenant, seller_tax_id=seller, **values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[TenantQuota.tenant, TenantQuota.seller_tax_id], set_=values
        )
    )
    loaded = session.identity_map.get(identity_key(TenantQuota, (tenant, seller)))
    if loaded is not None:
        session.expire(loaded)


def _row(session: Session, tenant: str, seller: str) -> TenantQuota | None:
    return session.scalars(
        select(TenantQuota)
        .where(TenantQuota.tenant == tenant, TenantQuota.seller_tax_id == seller)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def observe(
    session: Session,
    tenant: str,
    seller: str,
    *,
    day: Decimal | None,
    month: Decimal | None,
    is_warning: bool | None,
    issue_biz_type: str | None = None,
    biz_type: str | None = None,
    source: str = "callback",
    now: datetime | None = None,
) -> bool:
    """Record a ``bizControl`` answer (lower only within a period, module docstring).

    Returns True when a hold was released (its held drafts are due again: the caller's
    sweep or push re-checks them against the new answer).
    """
    now = now or utcnow()
    # ONE statement in the common case (a callback's hot path): an upsert that keeps the lower
    # value within the period, in SQL. A second one only when a hold is to be released.
    day_start, month_start = _period_starts(now)
    table = TenantQuota.__table__.c
    same_day = and_(table.observed_at.is_not(None), table.observed_at >= day_start)
    same_month = and_(table.observed_at.is_not(None), table.observed_at >= month_start)

    def lower(column: Any, new: Decimal | None, same: Any) -> Any:
        if new is None:
            return case((same, column), else_=null())
        keep = and_(same, column.is_not(None), column < new)
        return case((keep, column), else_=literal(new, Money()))

    inserted: dict[str, Any] = {
        "day_surplus": day,
        "month_surplus": month,
        "is_warning": bool(is_warning),
        "issue_biz_type": issue_biz_type,
        "biz_type": biz_type,
        "observed_at": now,
        "source": source,
        "updated_at": now,
    }
    updated: dict[str, Any] = {
        **inserted,
        "day_surplus": lower(table.day_surplus, day, same_day),
        "month_surplus": lower(table.month_surplus, month, same_month),
        # A warning seen today stays until the day turns (a forged "no warning" cannot hide it).
        "is_warning": true() if is_warning else and_(same_day, table.is_warning),
    }
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(TenantQuota).values(tenant=tenant, seller_tax_id=seller, **inserted)
    row = session.execute(
        statement.on_conflict_do_update(
            index_elements=[TenantQuota.tenant, TenantQuota.seller_tax_id], set_=updated
        ).returning(table.held, table.day_surplus, table.month_surplus)
    ).one()
    loaded = session.identity_map.get(identity_key(TenantQuota, (tenant, seller)))
    if loaded is not None:
        session.expire(loaded)
    # A hold is released for a re-check when the answer leaves any room at all (what was
    # reserved may have been issued meanwhile); a surplus of 0 cannot cover anything.
    left = [Decimal(str(v)) for v in (row.day_surplus, row.month_surplus) if v is not None]
    released = bool(row.held) and (not left or min(left) > 0)
    if released:
        session.execute(
            update(TenantQuota)
            .where(TenantQuota.tenant == tenant, TenantQuota.seller_tax_id == seller)
            .values(held=False, hold_reason=None, held_until=None, held_at=None)
            .execution_options(synchronize_session=False)
        )
        _due_again(session, tenant, seller, now)
    return released


def _period_starts(now: datetime) -> tuple[datetime, datetime]:
    """The start of ``now``'s Asia/Shanghai day and month, in UTC."""
    local = now.astimezone(SHANGHAI)
    day = datetime(local.year, local.month, local.day, tzinfo=SHANGHAI)
    return day.astimezone(UTC), day.replace(day=1).astimezone(UTC)


def record_exhausted(
    session: Session, tenant: str, seller: str, *, reason: str, now: datetime | None = None
) -> datetime:
    """An issuance failed with 授信额度不足: the day surplus is 0 and pushes are held until the
    next Asia/Shanghai day. Returns when the hold ends."""
    now = now or utcnow()
    row = _row(session, tenant, seller)
    until = next_boundary(now)
    month = row.month_surplus if row is not None and row.observed_at is not None else None
    if row is not None and row.observed_at is not None and not _same_month(row.observed_at, now):
        month = None
    _upsert(
        session,
        tenant,
        seller,
        {
            "day_surplus": _ZERO,
            "month_surplus": month,
            "is_warning": True,
            "observed_at": now,
            "source": "issuance_error",
            "held": True,
            "hold_reason": reason,
            "held_until": until,
            "held_at": now,
            "updated_at": now,
        },
    )
    return until


def release(
    session: Session, tenant: str, *, now: datetime | None = None, seller: str | None = None
) -> int:
    """Operator resume: every hold of ``tenant`` (one seller's, if given) is cleared and the
    stored surplus forgotten; the held drafts are due now. Returns how many rows changed."""
    now = now or utcnow()
    where = [TenantQuota.tenant == tenant]
    if seller is not None:
        where.append(TenantQuota.seller_tax_id == seller)
    changed = session.execute(  # type: ignore[attr-defined]  # a CursorResult
        update(TenantQuota)
        .where(*where)
        .values(
            held=False,
            hold_reason=None,
            held_until=None,
            held_at=None,
            day_surplus=None,
            month_surplus=None,
            observed_at=now,
            source="operator_resume",
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    _due_again(session, tenant, seller, now)
    for row in list(session.identity_map.values()):
        if isinstance(row, TenantQuota) and row.tenant == tenant:
            session.expire(row)
    return int(changed or 0)


def _due_again(session: Session, tenant: str, seller: str | None, now: datetime) -> None:
    """Held drafts of ``tenant`` (and ``seller``) due now (scheduling only, like the sweeps)."""
    where = [
        _documents.c.tenant == tenant,
        _documents.c.status == DocumentStatus.draft.value,
        _documents.c.last_error_code == QUOTA_HELD,
    ]
    if seller is not None:
        where.append(_documents.c.seller_tax_id == seller)
    session.execute(update(_documents).where(*where).values(next_attempt_at=now))


def hold_documents(
    session: Session, document_ids: Sequence[int], *, until: datetime, message: str, now: datetime
) -> None:
    """Held drafts: reason and due time ``until`` (one UPDATE; still ``draft``, version + 1)."""
    if not document_ids:
        return
    session.execute(
        update(_documents)
        .where(
            _documents.c.id.in_(sorted(document_ids)),
            _documents.c.status == DocumentStatus.draft.value,
        )
        .values(
            last_error_code=QUOTA_HELD,
            last_error_message=message,
            next_attempt_at=until,
            version=_documents.c.version + 1,
            updated_at=now,
        )
    )
    expire_loaded(session, *document_ids)


def quota_rows(session: Session, tenant: str | None = None) -> list[TenantQuota]:
    statement = select(TenantQuota).order_by(TenantQuota.tenant, TenantQuota.seller_tax_id)
    if tenant is not None:
        statement = statement.where(TenantQuota.tenant == tenant)
    return list(session.scalars(statement.execution_options(populate_existing=True)))


@dataclass(frozen=True, slots=True)
class Admission:
    """Why a bill waits: until when, in plain words (EN / ZH)."""

    until: datetime
    message: str


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


class QuotaGate:
    """The quota check of one push batch: ``load`` once (the rows of the batch's tenants,
    locked, and each known pair's reservation), then ``admit`` each bill in order."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session, self.now = session, now
        self._left: dict[tuple[str, str], tuple[Decimal, bool, TenantQuota]] = {}
        self._in_flight: dict[tuple[str, str], Decimal] = {}
        self._held: dict[tuple[str, str], Admission] = {}
        self._changed: set[tuple[str, str]] = set()

    @classmethod
    def load(cls, session: Session, pairs: Iterable[tuple[str, str]], now: datetime) -> QuotaGate:
        gate = cls(session, now)
        wanted = sorted(set(pairs))
        if not wanted:
            return gate
        rows = session.scalars(
            select(TenantQuota)
            .where(tuple_(TenantQuota.tenant, TenantQuota.seller_tax_id).in_(wanted))
            .with_for_update()  # concurrent batches of a pair check one after the other
            .execution_options(populate_existing=True)
        ).all()
        for row in rows:
            key = (row.tenant, row.seller_tax_id)
            if row.held and row.held_until is not None and row.held_until > now:
                gate._held[key] = Admission(row.held_until, row.hold_reason or "quota held")
                continue
            left, by_month = available(row, now)
            if left is None:
                continue
            assert row.observed_at is not None
            since, _ = _period_starts(row.observed_at)
            reserved = gate._reserved(key, since)
            gate._in_flight[key] = reserved
            gate._left[key] = (left - reserved, by_month, row)
        return gate

    def _reserved(self, key: tuple[str, str], since: datetime) -> Decimal:
        tenant, seller = key
        amount = func.coalesce(_documents.c.total_incl_tax, _documents.c.total_amount)
        total = self.session.scalar(
            select(func.coalesce(func.sum(amount), 0)).where(
                _documents.c.tenant == tenant,
                _documents.c.seller_tax_id == seller,
                _documents.c.status.in_(_IN_FLIGHT),
                _documents.c.status_changed_at >= since,
                or_(_documents.c.total_incl_tax > 0, and_(
                    _documents.c.total_incl_tax.is_(None), _documents.c.total_amount > 0
                )),
            )
        )  # fmt: skip
        return Decimal(str(total or 0))

    def admit(self, tenant: str, seller: str, amount: Decimal | None) -> Admission | None:
        """None: push it (its amount is now reserved); else why and until when it waits."""
        if amount is not None and amount <= 0:
            return None  # a red bill consumes no quota: never held
        key = (tenant, seller)
        held = self._held.get(key)
        if held is not None:
            return held
        known = self._left.get(key)
        if known is None or amount is None:
            return None  # nothing known
        left, by_month, row = known
        in_flight = self._in_flight.get(key, _ZERO)
        if amount <= left:
            self._left[key] = (left - amount, by_month, row)
            self._in_flight[key] = in_flight + amount
            return None
        boundary = next_boundary(self.now, month=by_month)
        period, period_zh = ("month", "本月") if by_month else ("day", "今日")
        if amount <= left + in_flight:
            # Only the bills in flight stand in the way: some may be issued (or fail) soon and
            # no callback need say so (a style without bizControl), so look again before long.
            until = min(boundary, self.now + QUOTA_RECHECK)
            when = f"re-checked at {until.astimezone(SHANGHAI):%H:%M} Asia/Shanghai"
        else:
            until = boundary
            when = f"pushed when the {period} turns ({until.astimezone(SHANGHAI):%Y-%m-%d %H:%M}"
            when += " Asia/Shanghai)"
        message = (
            f"held: the credit quota (授信额度) left this {period} for seller {seller}"
            f" ({_money(max(left, _ZERO))} yuan after {_money(in_flight)} yuan of bills pushed"
            f" and not yet issued) cannot cover this bill's {_money(amount)} yuan incl. tax;"
            f" {when}, when the cloud reports room, or after `fapiao tenants resume`."
            " Nothing failed."
            f" / 授信额度{period_zh}剩余不足以开具本单（价税合计 {_money(amount)} 元），"
            "单据保持草稿等待，额度重置、云端回报有余额或运维恢复后自动推送，未失败"
        )
        admission = Admission(until, message)
        self._held[key] = admission
        self._changed.add(key)
        return admission

    def write_holds(self) -> None:
        """The pairs that became held in this batch: ``held`` rows (in the batch's transaction)."""
        for key in sorted(self._changed):
            admission = self._held[key]
            _upsert(
                self.session,
                key[0],
                key[1],
                {
                    "held": True,
                    "hold_reason": admission.message,
                    "held_until": admission.until,
                    "held_at": self.now,
                    "updated_at": self.now,
                },
            )

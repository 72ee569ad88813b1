"""Batch claims for sweeps and polls: due rows, advancing schedules, disjoint concurrent claims."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from store.lifecycle import transition
from store.models import CallbackInbox, Document, ErpOutbox
from store.queries import (
    DueDocument,
    documents_by_bill_no,
    due_drafts,
    due_for_poll,
    due_outbox,
    due_withdrawals,
    expired_leases,
    oldest_by_status,
    stale_inbox,
    status_counts,
)
from store.states import DocumentStatus, Event
from store.tenants import is_paused, pause_tenant, paused_tenants, resume_tenant

MakeDocument = Callable[..., Document]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAST = NOW - timedelta(minutes=5)
FUTURE = NOW + timedelta(minutes=5)


def test_due_drafts_returns_due_ones_oldest_first_and_advances_them(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    late = make_document("draft", next_attempt_at=PAST - timedelta(minutes=1))
    due = make_document("draft", next_attempt_at=PAST)
    make_document("draft", next_attempt_at=FUTURE)  # backing off
    make_document("pushed", next_attempt_at=PAST)  # not a draft
    with session_factory() as session:
        claimed = due_drafts(session, NOW, limit=10, redeliver_after=timedelta(seconds=30))
        session.commit()
    assert [d.id for d in claimed] == [late.id, due.id]
    assert all(isinstance(d, DueDocument) and d.status is DocumentStatus.draft for d in claimed)
    assert claimed[0].bill_no == late.bill_no
    with session_factory() as session:
        assert due_drafts(session, NOW, limit=10) == []  # already handed out
        again = due_drafts(session, NOW + timedelta(seconds=31), limit=10)
        assert [d.id for d in again] == [late.id, due.id]  # lost messages come back
        advanced = session.get(Document, late.id)
        assert advanced is not None
        assert advanced.next_attempt_at == NOW + timedelta(seconds=31) + timedelta(seconds=60)
        assert advanced.version == late.version  # claims never bump the optimistic lock


def test_batch_claims_respect_the_limit(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    for _ in range(5):
        make_document("draft", next_attempt_at=PAST)
    with session_factory() as session:
        assert len(due_drafts(session, NOW, limit=2)) == 2
        assert len(due_drafts(session, NOW, limit=2)) == 2
        assert len(due_drafts(session, NOW, limit=2)) == 1
        assert due_drafts(session, NOW, limit=0) == []


def test_paused_tenants_are_skipped_by_cloud_sweeps_but_not_by_lease_expiry(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    paused_draft = make_document("draft", tenant="paused", next_attempt_at=PAST)
    paused_poll = make_document("pushed", tenant="paused", next_poll_at=PAST)
    paused_lease = make_document("pushing", tenant="paused", lease_expires_at=PAST)
    live = make_document("draft", tenant="live", next_attempt_at=PAST)
    with session_factory() as session:
        pause_tenant(session, "paused", "appSecret rejected / 第三方应用校验失败", now=NOW)
        session.commit()
    with session_factory() as session:
        assert [d.id for d in due_drafts(session, NOW)] == [live.id]
        assert due_for_poll(session, NOW) == []
        assert [d.id for d in expired_leases(session, NOW)] == [paused_lease.id]
        assert is_paused(session, "paused") and not is_paused(session, "live")
        assert paused_tenants(session)["paused"].paused_reason is not None
        session.commit()
    with session_factory() as session:
        resume_tenant(session, "paused", now=NOW)
        session.commit()
    with session_factory() as session:
        assert [d.id for d in due_drafts(session, NOW)] == [paused_draft.id]
        assert [d.id for d in due_for_poll(session, NOW)] == [paused_poll.id]
        assert not is_paused(session, "paused")
        assert paused_tenants(session) == {}


def test_due_for_poll_takes_polled_states_and_counts_polls(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    polled = {
        s: make_document(s.value, next_poll_at=PAST, poll_count=2)
        for s in (
            DocumentStatus.in_doubt,
            DocumentStatus.pushed,
            DocumentStatus.partially_invoiced,
            DocumentStatus.invoice_failed,
        )
    }
    make_document("invoiced", next_poll_at=PAST)  # settled: never polled
    make_document("pushed", next_poll_at=FUTURE)
    with session_factory() as session:
        claimed = due_for_poll(session, NOW, reschedule_after=timedelta(minutes=2))
        session.commit()
    assert {d.id for d in claimed} == {d.id for d in polled.values()}
    assert all(d.poll_count == 3 for d in claimed)
    with session_factory() as session:
        one = session.get(Document, polled[DocumentStatus.pushed].id)
        assert one is not None and one.next_poll_at == NOW + timedelta(minutes=2)
        only_in_doubt = due_for_poll(
            session, NOW + timedelta(minutes=3), statuses=[DocumentStatus.in_doubt]
        )
        assert [d.id for d in only_in_doubt] == [polled[DocumentStatus.in_doubt].id]
        with pytest.raises(ValueError):
            due_for_poll(session, NOW, statuses=[DocumentStatus.draft])


def test_due_withdrawals(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    owed = make_document("withdrawing", next_attempt_at=PAST)
    make_document("withdrawing", next_attempt_at=FUTURE)
    make_document("draft", next_attempt_at=PAST, tenant="elsewhere", bill_no="D-1")
    with session_factory() as session:
        assert [d.id for d in due_withdrawals(session, NOW)] == [owed.id]


def test_expired_lease_to_in_doubt_flow(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    stuck = make_document("pushing", lease_expires_at=PAST, push_attempt=1)
    make_document("pushing", lease_expires_at=FUTURE, push_attempt=1)
    with session_factory() as session:
        [claimed] = expired_leases(session, NOW, grace=timedelta(seconds=45))
        assert claimed.id == stuck.id
        assert expired_leases(session, NOW) == []  # extended, not handed out twice
        transition(
            session,
            claimed.id,
            Event.unsure,
            actor="sweeper",
            expected_status=DocumentStatus.pushing,
            expected_version=claimed.version,
            reason="lease expired",
            now=NOW,
        )
        session.commit()
    with session_factory() as session:
        doubt = session.get(Document, stuck.id)
        assert doubt is not None
        assert (doubt.status, doubt.in_doubt_since, doubt.lease_expires_at) == (
            "in_doubt",
            NOW,
            None,
        )
        assert [d.id for d in due_for_poll(session, NOW)] == [stuck.id]


def test_due_outbox_and_stale_inbox(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("invoiced")
    with session_factory() as session:
        due = ErpOutbox(document_id=document.id, event="invoiced", payload={}, next_attempt_at=PAST)
        later = ErpOutbox(
            document_id=document.id, event="invoiced", payload={}, next_attempt_at=FUTURE
        )
        done = ErpOutbox(
            document_id=document.id,
            event="pushed",
            payload={},
            next_attempt_at=PAST,
            state="delivered",
        )
        old = CallbackInbox(dedupe_key="a", raw_body=b"{}", received_at=NOW - timedelta(hours=1))
        fresh = CallbackInbox(dedupe_key="b", raw_body=b"{}", received_at=NOW)
        handled = CallbackInbox(
            dedupe_key="c",
            raw_body=b"{}",
            received_at=NOW - timedelta(hours=1),
            state="processed",
        )
        session.add_all([due, later, done, old, fresh, handled])
        session.commit()
    with session_factory() as session:
        [row] = due_outbox(session, NOW)
        assert (row.id, row.document_id) == (due.id, document.id)
        assert due_outbox(session, NOW) == []
        [first] = stale_inbox(session, NOW, older_than=timedelta(minutes=5))
        assert (first.id, first.attempts) == (old.id, 1)
        [second] = stale_inbox(session, NOW, older_than=timedelta(minutes=5))
        assert second.attempts == 2  # re-offered until processed, counting
        session.commit()


def test_lookups_and_counts_see_only_current_revisions(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    old = make_document("rejected", bill_no="SO-7", is_current=False)
    new = make_document("draft", bill_no="SO-7", revision=2)
    make_document("pushed", bill_no="SO-8")
    with session_factory() as session:
        assert [d.id for d in documents_by_bill_no(session, "SO-7")] == [new.id]
        assert documents_by_bill_no(session, "SO-7", tenant="nobody") == []
        counts = status_counts(session)
        assert counts[DocumentStatus.draft] == 1
        assert counts[DocumentStatus.pushed] == 1
        assert counts[DocumentStatus.rejected] == 0  # the superseded revision is history
        assert set(counts) == set(DocumentStatus)
        oldest = oldest_by_status(session)
        assert set(oldest) == {DocumentStatus.draft, DocumentStatus.pushed}
        assert oldest[DocumentStatus.draft].tzinfo is not None
        assert old.id not in {d.id for d in documents_by_bill_no(session, "SO-7")}


def claim_concurrently(
    session_factory: sessionmaker[Session],
    claim: Callable[[Session], list[DueDocument]],
    workers: int,
) -> list[list[int]]:
    barrier = threading.Barrier(workers)
    taken: list[list[int]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            while True:
                with session_factory() as session:
                    batch = claim(session)
                    session.commit()
                if not batch:
                    return
                taken[i].extend(d.id for d in batch)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return taken


@pytest.mark.parametrize("kind", ["drafts", "polls", "leases"])
def test_concurrent_batch_claimers_get_disjoint_rows(
    session_factory: sessionmaker[Session], make_document: MakeDocument, kind: str
) -> None:
    if kind == "drafts":
        ids = {make_document("draft", next_attempt_at=PAST).id for _ in range(60)}

        def claim(session: Session) -> list[DueDocument]:
            return due_drafts(session, NOW, limit=7)
    elif kind == "polls":
        ids = {make_document("pushed", next_poll_at=PAST).id for _ in range(60)}

        def claim(session: Session) -> list[DueDocument]:
            return due_for_poll(session, NOW, limit=7)
    else:
        ids = {make_document("pushing", lease_expires_at=PAST).id for _ in range(60)}

        def claim(session: Session) -> list[DueDocument]:
            return expired_leases(session, NOW, limit=7)

    taken = claim_concurrently(session_factory, claim, workers=4)
    flat = [i for batch in taken for i in batch]
    assert len(flat) == len(set(flat)), "a row was handed to two claimers"
    assert set(flat) == ids


@pytest.mark.postgres_only
def test_skip_locked_lets_a_second_claimer_pass_an_open_claim(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    ids = {make_document("draft", next_attempt_at=PAST).id for _ in range(6)}
    holder = session_factory()
    try:
        held = {d.id for d in due_drafts(holder, NOW, limit=3)}  # locked, not committed
        with session_factory() as other:
            # Fail instead of waiting if SKIP LOCKED were not honoured.
            other.execute(text("SET LOCAL lock_timeout = '5s'"))
            passed = {d.id for d in due_drafts(other, NOW, limit=10)}
            other.commit()
    finally:
        holder.rollback()
        holder.close()
    assert len(held) == 3
    assert passed == ids - held

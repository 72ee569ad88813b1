"""accept_documents() one bill at a time: identity, idempotency, 409 while live, new revisions
after dead ends, races. (Batches: test_store_accept_bulk.py.)"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.acceptance import Acceptance, AcceptanceOutcome, BillToAccept, accept_documents
from store.claims import claim_for_push
from store.lifecycle import LostRace, RevisionConflict, transition
from store.models import Document, DocumentEvent
from store.queries import current_document, document_history
from store.states import RESUBMITTABLE_STATUSES, DocumentStatus, Event

MakeDocument = Callable[..., Document]
BILL = {"tenant": "acme", "seller_tax_id": "91330100MA27XXXX0X", "bill_no": "SO-1001"}


def submit(session: Session, content: str, **overrides: Any) -> Acceptance:
    """One bill, a batch of one; a refusal is raised."""
    fields: dict[str, Any] = {
        **BILL,
        "payload": {"billNo": BILL["bill_no"], "remark": content, "totalAmount": "113.00"},
        "content_hash": f"sha-{content}",
        "total_amount": Decimal("113.00"),
        "total_incl_tax": Decimal("113.00"),
        "total_tax": Decimal("13.00"),
        "invoice_type": "10xdp",
    }
    fields.update(overrides)
    [result] = accept_documents(session, [BillToAccept(**fields)], actor="erp")
    if isinstance(result, RevisionConflict):
        raise result
    return result


def load(session: Session, acceptance: Acceptance) -> Document:
    document = session.get(Document, acceptance.document_id)
    assert document is not None
    assert (document.status, document.revision) == (acceptance.status, acceptance.revision)
    return document


def count(session: Session, model: type[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_new_bill_is_created_as_a_draft_with_a_submit_event(db_session: Session) -> None:
    acceptance = submit(db_session, "a")
    db_session.commit()
    document = load(db_session, acceptance)
    assert acceptance.outcome is AcceptanceOutcome.created
    assert (document.status, document.revision, document.is_current) == ("draft", 1, True)
    assert document.total_tax == Decimal("13.00")
    assert document.payload["totalAmount"] == "113.00"
    assert document.next_attempt_at is not None  # due for the draft sweep at once
    [event] = document_history(db_session, document.id)
    assert (event.from_status, event.to_status, event.event, event.actor) == (
        None,
        "draft",
        "submit",
        "erp",
    )


def test_identical_content_is_idempotent_in_any_state(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        first = submit(session, "a").document_id
        session.commit()
    for state_event in [None, Event.claim, Event.accepted, Event.issued_all]:
        with session_factory() as session:
            if state_event is Event.claim:
                assert claim_for_push(session, first, lease_seconds=60) is not None
            elif state_event is not None:
                transition(session, first, state_event, actor="test")
            session.commit()
        with session_factory() as session:
            before = (count(session, Document), count(session, DocumentEvent))
            again = submit(session, "a")
            session.commit()
            assert again.outcome is AcceptanceOutcome.unchanged
            assert again.document_id == first
            assert (count(session, Document), count(session, DocumentEvent)) == before


@pytest.mark.parametrize(
    "state", [s for s in DocumentStatus if s not in RESUBMITTABLE_STATUSES], ids=str
)
def test_different_content_while_live_is_a_conflict_naming_the_state(
    session_factory: sessionmaker[Session], make_document: MakeDocument, state: DocumentStatus
) -> None:
    existing = make_document(state.value, **BILL, content_hash="sha-old")
    with session_factory() as session:
        with pytest.raises(RevisionConflict) as caught:
            submit(session, "new")
        session.commit()
    assert caught.value.status is state
    assert f"'{state.value}'" in str(caught.value)
    assert BILL["bill_no"] in str(caught.value)
    with session_factory() as session:
        assert count(session, Document) == 1
        current = current_document(session, **BILL)
        assert current is not None
        assert (current.id, current.status, current.content_hash) == (
            existing.id,
            state.value,
            "sha-old",
        )


@pytest.mark.parametrize("state", RESUBMITTABLE_STATUSES, ids=str)
def test_different_content_after_a_dead_end_is_a_new_revision(
    session_factory: sessionmaker[Session], make_document: MakeDocument, state: DocumentStatus
) -> None:
    old = make_document(state.value, **BILL, content_hash="sha-old", push_attempt=2)
    with session_factory() as session:
        acceptance = submit(session, "fixed")
        session.commit()
        new = load(session, acceptance)
    assert acceptance.outcome is AcceptanceOutcome.new_revision
    assert new.id != old.id
    assert (new.revision, new.status, new.is_current, new.push_attempt) == (2, "draft", True, 0)
    assert new.content_hash == "sha-fixed"

    with session_factory() as session:
        previous = session.get(Document, old.id)
        assert previous is not None
        assert (previous.status, previous.is_current) == (state.value, False)
        [superseded] = document_history(session, old.id)
        assert (superseded.event, superseded.outcome) == ("resubmit", "superseded")
        assert (superseded.from_status, superseded.to_status) == (state.value, state.value)
        [first] = document_history(session, new.id)
        assert (first.event, first.from_status, first.to_status) == (
            "resubmit",
            state.value,
            "draft",
        )
        current = current_document(session, **BILL)
        assert current is not None and current.id == new.id

    # The new revision is live again: yet another different content is refused...
    with session_factory() as session, pytest.raises(RevisionConflict):
        submit(session, "third")
    # ...and the new content is idempotent.
    with session_factory() as session:
        assert submit(session, "fixed").outcome is AcceptanceOutcome.unchanged


def test_same_bill_number_for_other_tenants_or_sellers_is_another_document(
    db_session: Session,
) -> None:
    a = submit(db_session, "a").document_id
    b = submit(db_session, "a", tenant="other").document_id
    c = submit(db_session, "a", seller_tax_id="91110000600037341L").document_id
    db_session.commit()
    assert len({a, b, c}) == 3


def test_resubmitting_older_content_after_a_new_revision_is_yet_another_revision(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        first = submit(session, "a").document_id
        session.commit()
    with session_factory() as session:
        assert claim_for_push(session, first, lease_seconds=60) is not None
        transition(session, first, Event.refused, actor="w", attempt=1)
        session.commit()
    with session_factory() as session:
        second = submit(session, "b").document_id
        transition(session, second, Event.withdraw, actor="ops")
        session.commit()
    with session_factory() as session:
        third = submit(session, "a")
        session.commit()
    assert third.outcome is AcceptanceOutcome.new_revision
    assert third.revision == 3


def test_floats_in_the_payload_are_refused(db_session: Session) -> None:
    with pytest.raises(Exception, match="float"):
        submit(db_session, "a", payload={"totalAmount": 113.0})


def test_concurrent_first_submissions_create_one_document(
    session_factory: sessionmaker[Session],
) -> None:
    barrier = threading.Barrier(3)
    outcomes: list[object] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            with session_factory() as session:
                result = submit(session, "same").outcome
                session.commit()
        except Exception as error:
            result = error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(map(str, outcomes)) == ["created", "unchanged", "unchanged"], outcomes
    with session_factory() as session:
        assert count(session, Document) == 1


def test_concurrent_new_revisions_one_wins_the_others_lose_cleanly(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    make_document("rejected", **BILL, content_hash="sha-old")
    barrier = threading.Barrier(3)
    outcomes: list[object] = []
    lock = threading.Lock()

    def run(content: str) -> None:
        barrier.wait()
        try:
            with session_factory() as session:
                result: object = submit(session, content).outcome
                session.commit()
        except Exception as error:
            result = error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=(c,)) for c in ("b", "c", "d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [o for o in outcomes if o is AcceptanceOutcome.new_revision]
    losers = [o for o in outcomes if isinstance(o, LostRace | RevisionConflict)]
    assert (len(winners), len(losers)) == (1, 2), outcomes
    with session_factory() as session:
        revisions = session.scalars(select(Document.revision).order_by(Document.revision)).all()
        assert list(revisions) == [1, 2]
        assert session.scalar(select(func.count()).where(Document.is_current.is_(True))) == 1


@pytest.mark.postgres_only
def test_a_submission_blocked_by_an_uncommitted_twin_recovers_to_unchanged(
    session_factory: sessionmaker[Session],
) -> None:
    # The twin inserts first and holds its transaction open: the second insert waits on the
    # unique index, fails when the twin commits, and must fall back to "same document".
    twin = session_factory()
    created = submit(twin, "same")
    assert created.outcome is AcceptanceOutcome.created
    result: list[object] = []

    def second() -> None:
        try:
            with session_factory() as session:
                outcome = submit(session, "same")
                session.commit()
                result.append((outcome.outcome, outcome.document_id))
        except Exception as error:
            result.append(error)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=0.5)  # give it time to block; correctness does not depend on it
    twin.commit()
    twin.close()
    thread.join(timeout=60)
    assert result == [(AcceptanceOutcome.unchanged, created.document_id)]


def _failed_via(session_factory: sessionmaker[Session], *events: Event) -> int:
    with session_factory() as session:
        document_id = submit(session, "a").document_id
        session.commit()
        assert claim_for_push(session, document_id, lease_seconds=60) is not None
        for event in events:
            transition(session, document_id, event, actor="test")
        session.commit()
        return document_id


def test_failed_before_anything_was_sent_accepts_a_new_revision(
    session_factory: sessionmaker[Session],
) -> None:
    old = _failed_via(session_factory, Event.give_up)  # pushing → failed (never sent)
    with session_factory() as session:
        acceptance = submit(session, "fixed")
        session.commit()
    assert acceptance.outcome is AcceptanceOutcome.new_revision
    assert acceptance.document_id != old


@pytest.mark.parametrize(
    "events",
    [
        (Event.unsure, Event.give_up),  # in_doubt → failed: the outcome was never settled
        # settled once (absent → draft), pushed again, unknown again, then failed
        (Event.unsure, Event.absent),
    ],
    ids=["from_in_doubt", "in_doubt_then_absent_then_failed"],
)
def test_failed_while_the_outcome_was_unknown_refuses_a_new_revision(
    session_factory: sessionmaker[Session], events: tuple[Event, ...]
) -> None:
    old = _failed_via(session_factory, *events)
    if events[-1] is Event.absent:  # back to draft: push again, this time unknown → failed
        with session_factory() as session:
            assert claim_for_push(session, old, lease_seconds=60) is not None
            transition(session, old, Event.unsure, actor="test")
            transition(session, old, Event.give_up, actor="test")
            session.commit()
    with session_factory() as session:
        with pytest.raises(RevisionConflict) as caught:
            submit(session, "different")
        session.commit()
    message = str(caught.value)
    assert "never settled" in message and "withdraw" in message and "replay" in message
    assert caught.value.status is DocumentStatus.failed
    with session_factory() as session:
        assert count(session, Document) == 1
        # Replaying the same content is still possible.
        assert submit(session, "a").outcome is AcceptanceOutcome.unchanged


def test_failed_after_an_earlier_accepted_push_refuses_a_new_revision(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    existing = make_document("pushed", **BILL, content_hash="sha-a")
    with session_factory() as session:
        # A history with an accepted push that still ended failed (written directly: the
        # state table offers no such path today; the rule must hold if one appears).
        session.add(
            DocumentEvent(
                document_id=existing.id,
                from_status="in_doubt",
                to_status="pushed",
                event="accepted",
                outcome="applied",
                actor="test",
            )
        )
        row = session.get(Document, existing.id)
        assert row is not None
        row.status = "failed"
        session.add(
            DocumentEvent(
                document_id=existing.id,
                from_status="pushing",
                to_status="failed",
                event="give_up",
                outcome="applied",
                actor="test",
            )
        )
        session.commit()
    with session_factory() as session, pytest.raises(RevisionConflict):
        submit(session, "different")

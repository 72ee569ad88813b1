"""transition(), update_fields() and claim_for_push() against the real database (PostgreSQL or
SQLite)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Update, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from store.claims import claim_for_push
from store.lifecycle import (
    TRANSITIONS,
    LostRace,
    TransitionNotAllowed,
    TransitionOutcome,
    transition,
    update_fields,
)
from store.models import Document, DocumentEvent
from store.states import DocumentStatus, Event

MakeDocument = Callable[..., Document]
NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

# Pairs applied through their own entry point (claim_for_push / accept_documents).
DEDICATED = {Event.claim, Event.resubmit}
REAL = sorted(
    ((s, e, t) for (s, e), t in TRANSITIONS.items() if s != t and e not in DEDICATED),
    key=str,
)
NO_OP = sorted(((s, e) for (s, e), t in TRANSITIONS.items() if s == t), key=str)
FORBIDDEN = sorted(
    ((s, e) for s in DocumentStatus for e in Event if (s, e) not in TRANSITIONS), key=str
)


def reload(session_factory: sessionmaker[Session], document_id: int) -> Document:
    with session_factory() as session:
        document = session.get(Document, document_id)
        assert document is not None
        return document


def events_of(session_factory: sessionmaker[Session], document_id: int) -> list[DocumentEvent]:
    with session_factory() as session:
        return list(
            session.scalars(
                select(DocumentEvent)
                .where(DocumentEvent.document_id == document_id)
                .order_by(DocumentEvent.id)
            )
        )


@pytest.mark.parametrize(("state", "event", "target"), REAL, ids=lambda v: str(v))
def test_every_real_transition_moves_state_bumps_version_and_logs_one_event(
    session_factory: sessionmaker[Session],
    make_document: MakeDocument,
    state: DocumentStatus,
    event: Event,
    target: DocumentStatus,
) -> None:
    document = make_document(state.value, version=3, push_attempt=2)
    with session_factory() as session:
        result = transition(
            session,
            document.id,
            event,
            actor="test",
            expected_status=state,
            expected_version=3,
            attempt=2,
            reason="because",
            now=NOW,
        )
        session.commit()

    assert result.outcome is TransitionOutcome.applied
    assert (result.from_status, result.to_status, result.version) == (state, target, 4)
    after = reload(session_factory, document.id)
    assert after.status == target.value
    assert after.version == 4
    assert after.status_changed_at == NOW
    [logged] = events_of(session_factory, document.id)
    assert (logged.from_status, logged.to_status, logged.event) == (state, target, event)
    assert (logged.actor, logged.reason, logged.attempt, logged.outcome) == (
        "test",
        "because",
        2,
        "applied",
    )


@pytest.mark.parametrize(("state", "event"), NO_OP, ids=lambda v: str(v))
def test_no_op_rows_change_nothing_and_log_nothing(
    session_factory: sessionmaker[Session],
    make_document: MakeDocument,
    state: DocumentStatus,
    event: Event,
) -> None:
    document = make_document(state.value, version=5, last_error_message="kept")
    with session_factory() as session:
        result = transition(
            session,
            document.id,
            event,
            actor="test",
            changes={"last_error_message": "ignored on a no-op"},
            now=NOW,
        )
        session.commit()
    assert result.outcome is TransitionOutcome.noop
    assert result.to_status == state
    after = reload(session_factory, document.id)
    assert (after.status, after.version, after.last_error_message) == (state.value, 5, "kept")
    assert after.updated_at == document.updated_at
    assert events_of(session_factory, document.id) == []


@pytest.mark.parametrize("state", list(DocumentStatus), ids=str)
def test_every_forbidden_pair_raises_naming_state_and_event(
    session_factory: sessionmaker[Session], make_document: MakeDocument, state: DocumentStatus
) -> None:
    document = make_document(state.value)
    forbidden = [e for s, e in FORBIDDEN if s == state]
    assert forbidden, "every state forbids something"
    with session_factory() as session:
        for event in forbidden:
            with pytest.raises(TransitionNotAllowed) as caught:
                transition(session, document.id, event, actor="test")
            assert caught.value.status is state
            assert caught.value.event is event
            assert f"'{state.value}'" in str(caught.value)
            assert f"'{event.value}'" in str(caught.value)
            assert document.bill_no in str(caught.value)
        session.commit()
    after = reload(session_factory, document.id)
    assert (after.status, after.version) == (state.value, document.version)
    assert events_of(session_factory, document.id) == []


@pytest.mark.parametrize("event", sorted(DEDICATED, key=str), ids=str)
def test_claim_and_resubmit_go_through_their_own_functions(
    db_session: Session, make_document: MakeDocument, event: Event
) -> None:
    state = next(s for (s, e) in TRANSITIONS if e is event)
    document = make_document(state.value)
    with pytest.raises(ValueError, match=event.value):
        transition(db_session, document.id, event, actor="test")


def test_stale_attempt_is_recorded_but_never_applied(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    # Attempt 1 timed out, the query proved it absent, attempt 2 is pushing now.
    document = make_document("pushing", push_attempt=2, version=7)
    with session_factory() as session:
        result = transition(
            session, document.id, Event.accepted, actor="worker", attempt=1, reason="late"
        )
        session.commit()
    assert result.outcome is TransitionOutcome.stale
    after = reload(session_factory, document.id)
    assert (after.status, after.version) == ("pushing", 7)
    [logged] = events_of(session_factory, document.id)
    assert (logged.event, logged.outcome, logged.attempt) == ("accepted", "stale", 1)
    assert (logged.from_status, logged.to_status) == ("pushing", "pushing")
    assert logged.reason is not None
    assert "attempt 1" in logged.reason and "late" in logged.reason


def test_stale_answer_even_for_a_pair_the_table_forbids_is_only_recorded(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("draft", push_attempt=3)
    with session_factory() as session:
        result = transition(session, document.id, Event.refused, actor="worker", attempt=2)
        session.commit()
    assert result.outcome is TransitionOutcome.stale
    assert reload(session_factory, document.id).status == "draft"
    assert [e.outcome for e in events_of(session_factory, document.id)] == ["stale"]


def test_current_attempt_is_applied(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushing", push_attempt=2)
    with session_factory() as session:
        transition(session, document.id, Event.accepted, actor="worker", attempt=2)
        session.commit()
    assert reload(session_factory, document.id).status == "pushed"


def test_an_attempt_from_the_future_is_a_bug(
    db_session: Session, make_document: MakeDocument
) -> None:
    document = make_document("pushing", push_attempt=1)
    with pytest.raises(ValueError, match="newer"):
        transition(db_session, document.id, Event.accepted, actor="worker", attempt=2)


def test_expected_version_mismatch_is_a_lost_race_and_writes_nothing(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushed", version=4)
    with session_factory() as session:
        with pytest.raises(LostRace) as caught:
            transition(session, document.id, Event.issued_all, actor="worker", expected_version=3)
        session.commit()
    assert (caught.value.actual_status, caught.value.actual_version) == ("pushed", 4)
    assert (caught.value.document_id, caught.value.event) == (document.id, Event.issued_all)
    assert (caught.value.expected_status, caught.value.expected_version) == (None, 3)
    assert reload(session_factory, document.id).status == "pushed"
    assert events_of(session_factory, document.id) == []


def test_expected_status_mismatch_is_a_lost_race(
    db_session: Session, make_document: MakeDocument
) -> None:
    document = make_document("pushed")
    with pytest.raises(LostRace) as caught:
        transition(
            db_session,
            document.id,
            Event.unsure,
            actor="sweeper",
            expected_status=DocumentStatus.pushing,
        )
    assert (caught.value.document_id, caught.value.event) == (document.id, Event.unsure)
    assert (caught.value.expected_status, caught.value.actual_status) == ("pushing", "pushed")


def test_a_write_between_read_and_update_makes_the_transition_lose_though_the_status_matches(
    session_factory: sessionmaker[Session],
    make_document: MakeDocument,
    db_backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The compare-and-set is on the version, not only the status: update_fields (an error, a
    # schedule, an amount) keeps the status but may change what the decision was based on.
    # The rival write lands after transition() read the row and before its UPDATE.
    document = make_document("pushed", version=1)

    def rival_write(own: Session) -> None:
        if db_backend == "postgresql":
            with session_factory() as rival:  # another connection, committed
                assert update_fields(rival, document.id, {"last_error_code": "late"}) == 2
                rival.commit()
        else:  # SQLite serialises writers (BEGIN IMMEDIATE): only our own transaction can
            assert update_fields(own, document.id, {"last_error_code": "late"}) == 2

    with session_factory() as session:
        execute = session.execute
        raced: list[Any] = []

        def racing(statement: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(statement, Update) and not raced:
                raced.append(statement)
                rival_write(session)
            return execute(statement, *args, **kwargs)

        monkeypatch.setattr(session, "execute", racing)
        with pytest.raises(LostRace) as caught:
            transition(session, document.id, Event.issued_all, actor="worker")
        monkeypatch.undo()
        session.commit()
    assert len(raced) == 1
    assert (caught.value.expected_status, caught.value.expected_version) == ("pushed", 1)
    assert (caught.value.actual_status, caught.value.actual_version) == ("pushed", 2)
    after = reload(session_factory, document.id)
    assert (after.status, after.version, after.last_error_code) == ("pushed", 2, "late")
    assert events_of(session_factory, document.id) == []


def test_a_transition_given_the_document_just_read_does_not_read_it_again(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushed", version=1)
    with session_factory() as session:
        loaded = session.get(Document, document.id, populate_existing=True)
        assert loaded is not None
        execute = session.execute
        statements: list[Any] = []

        def counting(statement: Any, *args: Any, **kwargs: Any) -> Any:
            statements.append(statement)
            return execute(statement, *args, **kwargs)

        session.execute = counting  # type: ignore[method-assign]
        result = transition(session, document.id, Event.issued_all, actor="worker", current=loaded)
        session.commit()
    assert (result.outcome, result.version, result.to_status) == ("applied", 2, "invoiced")
    assert isinstance(statements[0], Update) and len(statements) == 2  # UPDATE, event INSERT
    after = reload(session_factory, document.id)
    assert (after.status, after.version) == ("invoiced", 2)
    assert [event.event for event in events_of(session_factory, document.id)] == ["issued_all"]


def test_a_transition_given_the_document_read_before_a_rival_write_still_loses(
    session_factory: sessionmaker[Session],
    make_document: MakeDocument,
    db_backend: str,
) -> None:
    # ``current`` skips the read, not the compare-and-set: the version condition decides.
    document = make_document("pushed", version=1)
    with session_factory() as session:
        loaded = session.get(Document, document.id, populate_existing=True)
        assert loaded is not None
        if db_backend == "postgresql":
            with session_factory() as rival:  # another connection, committed
                assert update_fields(rival, document.id, {"last_error_code": "late"}) == 2
                rival.commit()
        else:  # SQLite serialises writers: a Core write in our own transaction, not expired
            session.execute(
                update(Document)
                .where(Document.id == document.id)
                .values(version=2, last_error_code="late")
                .execution_options(synchronize_session=False)
            )
        assert loaded.version == 1  # the caller's copy is the one from before the write
        with pytest.raises(LostRace) as caught:
            transition(session, document.id, Event.issued_all, actor="worker", current=loaded)
        session.commit()
    assert (caught.value.expected_status, caught.value.expected_version) == ("pushed", 1)
    assert (caught.value.actual_status, caught.value.actual_version) == ("pushed", 2)
    after = reload(session_factory, document.id)
    assert (after.status, after.version, after.last_error_code) == ("pushed", 2, "late")
    assert events_of(session_factory, document.id) == []


def test_entering_states_sets_their_due_columns(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    lease = NOW + timedelta(minutes=5)
    document = make_document("pushing", lease_expires_at=lease, push_attempt=1)
    with session_factory() as session:
        transition(session, document.id, Event.unsure, actor="sweeper", now=NOW)
        session.commit()
    in_doubt = reload(session_factory, document.id)
    assert in_doubt.lease_expires_at is None
    assert in_doubt.in_doubt_since == NOW
    assert in_doubt.next_poll_at == NOW

    later = NOW + timedelta(minutes=1)
    with session_factory() as session:
        transition(session, document.id, Event.absent, actor="poller", now=later)
        session.commit()
    draft = reload(session_factory, document.id)
    assert (draft.status, draft.in_doubt_since, draft.next_poll_at) == ("draft", None, None)
    assert draft.next_attempt_at == later


def test_polled_states_keep_their_schedule_and_changes_override(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    scheduled = NOW + timedelta(minutes=10)
    document = make_document("pushed", next_poll_at=scheduled)
    with session_factory() as session:
        transition(session, document.id, Event.issued_some, actor="poller", now=NOW)
        session.commit()
    assert reload(session_factory, document.id).next_poll_at == scheduled

    other = make_document("pushing", push_attempt=1)
    retry_at = NOW + timedelta(seconds=30)
    with session_factory() as session:
        transition(
            session,
            other.id,
            Event.retry,
            actor="worker",
            attempt=1,
            now=NOW,
            changes={
                "next_attempt_at": retry_at,
                "last_error_code": "9999",
                "last_error_message": "系统繁忙",
            },
        )
        session.commit()
    retried = reload(session_factory, other.id)
    assert (retried.status, retried.next_attempt_at) == ("draft", retry_at)
    assert (retried.last_error_code, retried.last_error_message) == ("9999", "系统繁忙")


@pytest.mark.parametrize(
    "changes",
    [{"status": "invoiced"}, {"version": 1}, {"push_attempt": 9}, {"bill_no": "X"}, {"nope": 1}],
)
def test_changes_cannot_touch_what_the_lifecycle_owns(
    db_session: Session, make_document: MakeDocument, changes: dict[str, Any]
) -> None:
    document = make_document("pushed")
    with pytest.raises(ValueError):
        transition(db_session, document.id, Event.issued_all, actor="x", changes=changes)


def test_transition_refreshes_a_document_already_loaded_in_the_session(
    db_session: Session, make_document: MakeDocument
) -> None:
    document = make_document("pushed")
    loaded = db_session.get(Document, document.id)
    assert loaded is not None and loaded.status == "pushed"
    transition(
        db_session,
        document.id,
        Event.issued_all,
        actor="x",
        changes={"issued_amount": Decimal("113.00")},
    )
    assert loaded.status == "invoiced"
    assert loaded.issued_amount == Decimal("113.00")


def test_transition_does_not_commit(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushed")
    with session_factory() as session:
        transition(session, document.id, Event.issued_all, actor="x")
        session.rollback()
    assert reload(session_factory, document.id).status == "pushed"
    assert events_of(session_factory, document.id) == []


def test_update_fields_bumps_version_and_compares_and_sets(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushed", version=2)
    with session_factory() as session:
        assert update_fields(session, document.id, {"poll_count": 4}, expected_version=2) == 3
        with pytest.raises(LostRace):
            update_fields(session, document.id, {"poll_count": 5}, expected_version=2)
        with pytest.raises(ValueError):
            update_fields(session, document.id, {"status": "invoiced"})
        session.commit()
    after = reload(session_factory, document.id)
    assert (after.poll_count, after.version, after.status) == (4, 3, "pushed")


# --- claims and races ---------------------------------------------------------------------


def test_claim_moves_draft_to_pushing_with_a_new_attempt_and_lease(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("draft", push_attempt=1, version=2)
    with session_factory() as session:
        claimed = claim_for_push(session, document.id, lease_seconds=90, now=NOW)
        session.commit()
    assert claimed is not None
    assert (claimed.push_attempt, claimed.version) == (2, 3)
    assert claimed.lease_expires_at == NOW + timedelta(seconds=90)
    assert claimed.bill_no == document.bill_no
    after = reload(session_factory, document.id)
    assert (after.status, after.push_attempt, after.next_attempt_at) == ("pushing", 2, None)
    [logged] = events_of(session_factory, document.id)
    assert (logged.from_status, logged.to_status, logged.event, logged.attempt) == (
        "draft",
        "pushing",
        "claim",
        2,
    )


@pytest.mark.parametrize("state", [s for s in DocumentStatus if s is not DocumentStatus.draft])
def test_claim_of_anything_but_a_draft_is_none(
    session_factory: sessionmaker[Session], make_document: MakeDocument, state: DocumentStatus
) -> None:
    document = make_document(state.value)
    with session_factory() as session:
        assert claim_for_push(session, document.id, lease_seconds=60, now=NOW) is None
        session.commit()
    assert reload(session_factory, document.id).status == state.value
    assert events_of(session_factory, document.id) == []


def race(workers: int, work: Callable[[int], object]) -> list[object]:
    """Run `work(i)` in `workers` threads released together by a barrier."""
    barrier = threading.Barrier(workers)
    results: list[object] = [None] * workers

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as error:  # the test inspects what each thread got
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.postgres_only
def test_two_threads_racing_one_claim_on_postgres_exactly_one_wins(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("draft")

    def claim(_: int) -> object:
        with session_factory() as session:
            claimed = claim_for_push(session, document.id, lease_seconds=60)
            session.commit()
            return claimed

    for _ in range(5):  # a few rounds: each must have one winner
        results = race(2, claim)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert all(not isinstance(r, Exception) for r in results), results
        with session_factory() as session:
            pushing = session.get(Document, document.id)
            assert pushing is not None and pushing.status == "pushing"
            transition(session, document.id, Event.retry, actor="test")
            session.commit()

    claims = [e for e in events_of(session_factory, document.id) if e.event == "claim"]
    assert [e.attempt for e in claims] == [1, 2, 3, 4, 5]


def test_threads_racing_one_claim_exactly_one_wins(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    # The same race on whichever database is configured (SQLite: BEGIN IMMEDIATE).
    document = make_document("draft")

    def claim(_: int) -> object:
        with session_factory() as session:
            claimed = claim_for_push(session, document.id, lease_seconds=60)
            session.commit()
            return claimed

    results = race(4, claim)
    assert sum(r is not None for r in results) == 1, results
    assert [e.event for e in events_of(session_factory, document.id)] == ["claim"]


def test_racing_transitions_one_wins_the_other_loses_cleanly(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushed", version=1)
    events = [Event.issued_all, Event.withdraw]

    def apply(i: int) -> object:
        with session_factory() as session:
            result = transition(session, document.id, events[i], actor=f"t{i}", expected_version=1)
            session.commit()
            return result

    results = race(2, apply)
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], LostRace)
    logged = events_of(session_factory, document.id)
    assert len(logged) == 1
    after = reload(session_factory, document.id)
    assert after.status == logged[0].to_status
    assert after.version == 2


def test_event_log_is_append_only_history(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("draft")
    with session_factory() as session:
        claimed = claim_for_push(session, document.id, lease_seconds=60)
        assert claimed is not None
        transition(session, document.id, Event.accepted, actor="w", attempt=1)
        transition(session, document.id, Event.issued_some, actor="w")
        transition(session, document.id, Event.issued_all, actor="w")
        transition(session, document.id, Event.issued_all, actor="w")  # duplicate: no-op
        session.commit()
    trail = [(e.from_status, e.to_status) for e in events_of(session_factory, document.id)]
    assert trail == [
        ("draft", "pushing"),
        ("pushing", "pushed"),
        ("pushed", "partially_invoiced"),
        ("partially_invoiced", "invoiced"),
    ]
    with session_factory() as session:
        count = session.scalar(
            select(func.count())
            .select_from(DocumentEvent)
            .where(DocumentEvent.document_id == document.id)
        )
    assert count == 4


# Survivors of the mutation run (docs/TESTING.md, "Mutation testing") that matter.


def test_a_transition_changes_only_its_own_row_and_stamps_it(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    earlier = NOW - timedelta(hours=1)
    mine = make_document("pushed", version=1, updated_at=earlier)
    twin = make_document("pushed", version=1, updated_at=earlier)  # only the id tells them apart
    with session_factory() as session:
        result = transition(session, mine.id, Event.issued_all, actor="worker", now=NOW)
        session.commit()
    assert (result.document_id, result.event, result.from_status, result.to_status) == (
        mine.id,
        Event.issued_all,
        DocumentStatus.pushed,
        DocumentStatus.invoiced,
    )
    assert (result.outcome, result.version, result.tenant) == (TransitionOutcome.applied, 2, "acme")
    changed, untouched = reload(session_factory, mine.id), reload(session_factory, twin.id)
    assert (changed.status, changed.updated_at) == ("invoiced", NOW)
    assert (untouched.status, untouched.version, untouched.updated_at) == ("pushed", 1, earlier)
    assert events_of(session_factory, twin.id) == []


def test_noop_and_stale_results_name_the_document_event_state_and_version(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    state, event = NO_OP[0]
    same = make_document(state.value, version=5)
    late = make_document("pushing", push_attempt=2, version=7)
    with session_factory() as session:
        noop = transition(session, same.id, event, actor="worker")
        stale = transition(session, late.id, Event.accepted, actor="worker", attempt=1)
        session.commit()
    assert (noop.document_id, noop.event, noop.from_status, noop.to_status) == (
        same.id,
        event,
        state,
        state,
    )
    assert (noop.outcome, noop.version, noop.tenant) == (TransitionOutcome.noop, 5, "acme")
    assert (stale.document_id, stale.event, stale.from_status, stale.to_status) == (
        late.id,
        Event.accepted,
        DocumentStatus.pushing,
        DocumentStatus.pushing,
    )
    assert (stale.outcome, stale.version, stale.tenant) == (TransitionOutcome.stale, 7, "acme")


def test_a_status_written_behind_the_version_still_makes_the_transition_lose(
    session_factory: sessionmaker[Session],
    make_document: MakeDocument,
    db_backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No lifecycle writer changes the status without the version, but the compare-and-set
    # holds on both: a rogue UPDATE of the status alone still makes the transition lose.
    document = make_document("pushed", version=1)
    rogue = update(Document).where(Document.id == document.id).values(status="invoice_failed")

    with session_factory() as session:
        execute = session.execute
        raced: list[Any] = []

        def racing(statement: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(statement, Update) and not raced:
                raced.append(statement)
                if db_backend == "postgresql":
                    with session_factory() as rival:
                        rival.execute(rogue)
                        rival.commit()
                else:  # SQLite serialises writers: the rogue write shares our transaction
                    execute(rogue)
            return execute(statement, *args, **kwargs)

        monkeypatch.setattr(session, "execute", racing)
        with pytest.raises(LostRace):
            transition(session, document.id, Event.issued_all, actor="worker")
        monkeypatch.undo()
        session.commit()
    assert reload(session_factory, document.id).status == "invoice_failed"
    assert events_of(session_factory, document.id) == []


@pytest.mark.parametrize(
    ("state", "event"), [("draft", Event.withdraw), ("withdrawing", Event.withdrawn_ok)]
)
def test_leaving_a_state_with_a_due_attempt_clears_it(
    session_factory: sessionmaker[Session], make_document: MakeDocument, state: str, event: Event
) -> None:
    document = make_document(state, next_attempt_at=NOW)
    with session_factory() as session:
        transition(session, document.id, event, actor="operator", now=NOW)
        session.commit()
    after = reload(session_factory, document.id)
    assert (after.status, after.next_attempt_at) == ("withdrawn", None)


def test_update_fields_stamps_updated_at(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushed", updated_at=NOW - timedelta(hours=1))
    with session_factory() as session:
        update_fields(session, document.id, {"last_error_code": "x"}, now=NOW)
        session.commit()
    assert reload(session_factory, document.id).updated_at == NOW

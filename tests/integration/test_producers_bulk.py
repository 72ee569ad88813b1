"""The batch path of ``Intake.submit_many`` (``store.acceptance.accept_documents``): the same
results as one ``submit`` per document, event rows, enqueue after commit, races."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable
from typing import Any, cast

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from producers.intake import Intake, SubmitOutcome, SubmitResult
from producers.testing import bridge_settings, bridge_tenants, make_bill
from store.acceptance import Acceptance, AcceptanceOutcome, BillToAccept, accept_documents
from store.claims import claim_for_push
from store.lifecycle import RevisionConflict, transition
from store.models import Document, DocumentEvent
from store.states import Event
from worker.app import create_app
from worker.enqueue import CeleryEnqueuer, Followup, RecordingEnqueuer


class CommittedCheckingEnqueuer(RecordingEnqueuer):
    """Records messages and, at send time, whether another session already sees each row
    owed a push."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__()
        self.sessions = sessions
        self.visible_at_send: list[bool] = []

    def send(self, messages: Iterable[Followup]) -> int:
        batch = list(messages)
        with self.sessions() as session:
            for owed in batch:
                ids = owed.kwargs.get("document_ids") or [owed.kwargs["document_id"]]
                self.visible_at_send.extend(session.get(Document, d) is not None for d in ids)
        return super().send(batch)


def _fail(intake: Intake, sessions: sessionmaker[Session], bill_no: str) -> int:
    """A stored document taken to ``failed`` before anything was sent (revision allowed)."""
    created = intake.submit(make_bill(bill_no))
    assert created.document_id is not None
    with sessions() as session:
        assert claim_for_push(session, created.document_id, lease_seconds=60) is not None
        transition(session, created.document_id, Event.give_up, actor="test")
        session.commit()
    return created.document_id


def _scenario(intake: Intake, sessions: sessionmaker[Session], p: str) -> list[object]:
    """Existing documents, then the mixed batch to send (prefix ``p`` keeps runs apart)."""
    intake.submit(make_bill(f"{p}-SAME"))
    intake.submit(make_bill(f"{p}-LIVE"))
    _fail(intake, sessions, f"{p}-FAILED")
    changed: dict[str, Any] = {"remark": "changed"}
    return [
        make_bill(f"{p}-NEW1"),
        make_bill(f"{p}-SAME"),  # identical: unchanged
        {"billNo": f"{p}-BAD"},  # invalid
        make_bill(f"{p}-LIVE", **changed),  # different while draft: conflict
        make_bill(f"{p}-FAILED", **changed),  # different after failed: new revision
        make_bill(f"{p}-NEW1"),  # repeated in the batch: unchanged
        make_bill(f"{p}-NEW2", **changed),
        make_bill(f"{p}-NEW2"),  # repeated with other content: conflict
    ]


def _shape(result: SubmitResult) -> tuple[object, ...]:
    return (result.outcome, result.status, result.revision, result.tenant, len(result.issues))


def test_a_mixed_batch_gets_the_results_of_one_submit_per_document(
    session_factory: sessionmaker[Session],
) -> None:
    enqueuer = CommittedCheckingEnqueuer(session_factory)
    intake = Intake(session_factory, bridge_tenants(), enqueuer)
    bulk_batch = _scenario(intake, session_factory, "BK")
    one_by_one = _scenario(intake, session_factory, "SQ")
    enqueuer.clear()
    enqueuer.visible_at_send.clear()

    bulk = intake.submit_many(bulk_batch)
    pushed_by_bulk = [kw["document_id"] for kw in enqueuer.pushes()]
    sequential = [intake.submit(doc) for doc in one_by_one]  # type: ignore[arg-type]

    assert [r.outcome for r in bulk] == [
        SubmitOutcome.created,
        SubmitOutcome.unchanged,
        SubmitOutcome.invalid,
        SubmitOutcome.conflict,
        SubmitOutcome.new_revision,
        SubmitOutcome.unchanged,
        SubmitOutcome.created,
        SubmitOutcome.conflict,
    ]
    assert [_shape(r) for r in bulk] == [_shape(r) for r in sequential]
    assert bulk[0].document_id == bulk[5].document_id
    assert bulk[6].document_id == bulk[7].document_id
    assert (bulk[4].revision, bulk[4].status) == (2, "draft")
    # Pushes for created and new revisions only, in batch order, each row committed first.
    assert pushed_by_bulk == [bulk[0].document_id, bulk[4].document_id, bulk[6].document_id]
    assert enqueuer.visible_at_send and all(enqueuer.visible_at_send)


def test_every_document_of_the_bulk_insert_has_its_submit_event_and_stored_fields(
    session_factory: sessionmaker[Session],
) -> None:
    intake = Intake(session_factory, bridge_tenants(), RecordingEnqueuer())
    results = intake.submit_many([make_bill(f"EV-{i}", lines=i + 1) for i in range(3)])
    ids = [r.document_id for r in results]
    assert [r.outcome for r in results] == [SubmitOutcome.created] * 3
    with session_factory() as session:
        events = session.scalars(
            select(DocumentEvent)
            .where(DocumentEvent.document_id.in_(ids))
            .order_by(DocumentEvent.document_id)
        ).all()
        assert [(e.document_id, e.event, e.from_status, e.to_status, e.outcome, e.actor)
                for e in events] == [
            (i, "submit", None, "draft", "applied", "erp") for i in ids
        ]  # fmt: skip
        documents = session.scalars(
            select(Document).where(Document.id.in_(ids)).order_by(Document.id)
        ).all()
        assert [str(d.total_amount) for d in documents] == ["100.00", "200.00", "300.00"]
        assert [str(d.total_tax) for d in documents] == ["6.00", "12.00", "18.00"]
        for document in documents:
            assert (document.revision, document.version, document.is_current) == (1, 1, True)
            assert document.next_attempt_at is not None  # the sweeper finds a lost enqueue
            assert document.payload["billNo"] == document.bill_no
            assert document.payload["autoInvoice"] in ("0", "1")


def test_a_database_failure_in_the_batch_enqueues_nothing(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueuer = RecordingEnqueuer()
    intake = Intake(session_factory, bridge_tenants(), enqueuer)

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("database gone")

    monkeypatch.setattr("producers.intake.accept_documents", broken)
    with pytest.raises(RuntimeError):
        intake.submit_many([make_bill("GONE-1"), make_bill("GONE-2")])
    assert enqueuer.sent == []
    with session_factory() as session:
        assert session.scalars(select(Document.id)).all() == []


def _to_accept(bill_no: str, content_hash: str) -> BillToAccept:
    return BillToAccept(
        tenant="demo",
        seller_tax_id="S",
        bill_no=bill_no,
        payload={"billNo": bill_no},
        content_hash=content_hash,
        total_amount=make_bill(bill_no)["totalAmount"],
    )


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("content", "expected"),
    [("h-same", AcceptanceOutcome.unchanged), ("h-other", "conflict")],
)
def test_a_bill_created_by_a_concurrent_batch_is_judged_again_against_it(
    session_factory: sessionmaker[Session], content: str, expected: object
) -> None:
    # The twin inserts RACE first and holds its transaction open: the second batch's INSERT
    # waits on the unique index and fails when the twin commits. Its SAVEPOINT rolls back
    # (nothing of the failed INSERT remains) and both bills are judged again: RACE against
    # the twin's document, OTHER (no race) is inserted on the second try.
    twin = session_factory()
    [created] = accept_documents(twin, [_to_accept("RACE", "h-same")], actor="erp")
    assert isinstance(created, Acceptance) and created.outcome is AcceptanceOutcome.created
    outcome: list[object] = []

    def second() -> None:
        try:
            with session_factory() as session:
                settled = accept_documents(
                    session, [_to_accept("OTHER", "h-o"), _to_accept("RACE", content)], actor="erp"
                )
                outcome.append(settled)
                session.commit()
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=0.5)  # give it time to block; correctness does not depend on it
    twin.commit()
    twin.close()
    thread.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], list), outcome
    other, race = outcome[0]
    assert isinstance(other, Acceptance) and other.outcome is AcceptanceOutcome.created
    if expected == "conflict":
        assert isinstance(race, RevisionConflict) and race.status == "draft"
        assert race.document_id == created.document_id
    else:
        assert isinstance(race, Acceptance) and race.outcome is expected
        assert race.document_id == created.document_id
    with session_factory() as session:
        stored = session.scalars(select(Document.bill_no).order_by(Document.bill_no)).all()
        assert stored == ["OTHER", "RACE"]


@pytest.mark.postgres_only
def test_two_batches_with_the_same_new_bill_at_once_create_it_once(
    session_factory: sessionmaker[Session],
) -> None:
    intake = Intake(session_factory, bridge_tenants(), RecordingEnqueuer())
    start = threading.Barrier(2)
    results: list[list[SubmitResult] | Exception] = []
    lock = threading.Lock()

    def send(extra: str, remark: str) -> None:
        start.wait()
        try:
            outcome: list[SubmitResult] | Exception = intake.submit_many(
                [make_bill("TWICE", remark=remark), make_bill(extra)]
            )
        except Exception as error:
            outcome = error
        with lock:
            results.append(outcome)

    threads = [
        threading.Thread(target=send, args=("X-1", "same")),
        threading.Thread(target=send, args=("X-2", "other")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2 and all(isinstance(r, list) for r in results), results
    batches = cast(list[list[SubmitResult]], results)
    twice = sorted(batch[0].outcome.value for batch in batches)
    assert twice == ["conflict", "created"]
    assert [batch[1].outcome for batch in batches] == [SubmitOutcome.created] * 2
    with session_factory() as session:
        stored = session.scalars(select(Document.bill_no).order_by(Document.bill_no)).all()
        assert stored == ["TWICE", "X-1", "X-2"]


def test_a_batch_through_celery_sends_the_owed_pushes_as_one_batch_message(
    redis_url: str, database_url: str, session_factory: sessionmaker[Session]
) -> None:
    settings = bridge_settings(database_url, broker_url=redis_url, redis_url=redis_url)
    intake = Intake(session_factory, bridge_tenants(), CeleryEnqueuer(create_app(settings)))
    client = redis.Redis.from_url(redis_url)
    try:
        intake.submit(make_bill("BCEL-0"))
        results = intake.submit_many(
            [make_bill("BCEL-0"), make_bill("BCEL-1"), {"billNo": "BCEL-X"}, make_bill("BCEL-2")]
        )
        mine: list[dict[str, Any]] = []
        for raw in reversed(cast(list[bytes], client.lrange("push", 0, -1))):
            envelope = json.loads(raw)
            args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
            labels = kwargs.get("bill_no") or ",".join(kwargs.get("bill_nos", []))
            if str(labels).startswith("BCEL-"):
                mine.append({"task": envelope["headers"]["task"], "args": args, "kw": kwargs})
        assert mine == [
            {"task": "fapiao.push", "args": [], "kw": {"document_id": results[0].document_id,
                                                        "bill_no": "BCEL-0", "tenant": "demo"}},
            {"task": "fapiao.push_batch", "args": [], "kw": {
                "document_ids": [results[1].document_id, results[3].document_id],
                "bill_nos": ["BCEL-1", "BCEL-2"], "tenants": ["demo", "demo"]}},
        ]  # fmt: skip
    finally:
        client.close()

"""claim_many_for_push(): the bulk draft → pushing claim of fapiao.push_batch (both databases)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.claims import Claimed, claim_for_push, claim_many_for_push
from store.lifecycle import transition
from store.models import Document, DocumentEvent
from store.states import DocumentStatus, Event
from tests.integration.test_store_lifecycle import race

MakeDocument = Callable[..., Document]
NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def claim_events(sessions: sessionmaker[Session], document_id: int) -> list[DocumentEvent]:
    with sessions() as session:
        return list(
            session.scalars(
                select(DocumentEvent)
                .where(DocumentEvent.document_id == document_id, DocumentEvent.event == "claim")
                .order_by(DocumentEvent.id)
            )
        )


def test_claims_every_draft_and_only_drafts_in_one_go(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    first = make_document("draft", push_attempt=2, version=5)
    second = make_document("draft")
    pushed = make_document("pushed")
    in_doubt = make_document("in_doubt")
    with session_factory() as session:
        claims = claim_many_for_push(
            session,
            [second.id, first.id, pushed.id, in_doubt.id, 424242, first.id],
            lease_seconds=90,
            now=NOW,
            actor="batch",
        )
        session.commit()
    assert sorted(claims) == sorted([first.id, second.id])
    lease = NOW + timedelta(seconds=90)
    assert claims[first.id] == Claimed(
        document_id=first.id,
        tenant=first.tenant,
        seller_tax_id=first.seller_tax_id,
        bill_no=first.bill_no,
        revision=first.revision,
        version=6,
        push_attempt=3,
        lease_expires_at=lease,
    )
    assert (claims[second.id].push_attempt, claims[second.id].version) == (1, 2)
    with session_factory() as session:
        rows = {d.id: d for d in session.scalars(select(Document))}
    assert {i: rows[i].status for i in rows} == {
        first.id: "pushing",
        second.id: "pushing",
        pushed.id: "pushed",
        in_doubt.id: "in_doubt",
    }
    assert rows[first.id].lease_expires_at == lease
    assert rows[first.id].next_attempt_at is None
    # Exactly the events claim_for_push writes, one per claimed document.
    [event] = claim_events(session_factory, first.id)
    assert (event.from_status, event.to_status, event.outcome, event.actor, event.attempt) == (
        "draft",
        "pushing",
        "applied",
        "batch",
        3,
    )
    assert event.reason == f"lease until {lease.isoformat()}"
    assert [e.attempt for e in claim_events(session_factory, second.id)] == [1]
    assert claim_events(session_factory, pushed.id) == []


def test_nothing_to_claim_writes_nothing(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    done = make_document("invoiced")
    with session_factory() as session:
        assert claim_many_for_push(session, [done.id], lease_seconds=60) == {}
        assert claim_many_for_push(session, [], lease_seconds=60) == {}
        session.commit()
    assert claim_events(session_factory, done.id) == []


def test_a_loaded_document_sees_the_claim(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("draft")
    with session_factory() as session:
        loaded = session.get(Document, document.id)
        assert loaded is not None and loaded.status == "draft"
        claim_many_for_push(session, [document.id], lease_seconds=60)
        assert loaded.status == "pushing"  # expired behind the ORM, re-read
        session.rollback()


def _race_bulk_against_single(
    session_factory: sessionmaker[Session],
    ids: list[int],
    contested: int,
    workers: int,
    round_no: int = 1,
) -> None:
    def claim(i: int) -> object:
        with session_factory() as session:
            result: object
            if i == 0:
                result = claim_many_for_push(session, ids, lease_seconds=60)
            else:
                result = claim_for_push(session, contested, lease_seconds=60)
            session.commit()
            return result

    results = race(workers, claim)
    assert all(not isinstance(r, Exception) for r in results), results
    bulk = results[0]
    assert isinstance(bulk, dict)
    singles = [r for r in results[1:] if r is not None]
    winners = int(contested in bulk) + len(singles)
    assert winners == 1, results
    assert set(bulk) >= set(ids) - {contested}  # the uncontested ones all went to the batch
    assert len(claim_events(session_factory, contested)) == round_no  # one more claim event


@pytest.mark.postgres_only
def test_bulk_and_single_claims_racing_on_postgres_have_exactly_one_winner(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    documents = [make_document("draft") for _ in range(6)]
    ids = [d.id for d in documents]
    contested = ids[3]
    for round_no in range(1, 6):  # a few rounds: each must have one winner per document
        _race_bulk_against_single(session_factory, ids, contested, workers=3, round_no=round_no)
        with session_factory() as session:
            for doc_id in ids:
                transition(session, doc_id, Event.retry, actor="test")
            session.commit()
    with session_factory() as session:
        attempts = session.scalars(
            select(DocumentEvent.attempt)
            .where(DocumentEvent.document_id == contested, DocumentEvent.event == "claim")
            .order_by(DocumentEvent.id)
        ).all()
    assert attempts == [1, 2, 3, 4, 5]


@pytest.mark.postgres_only
def test_two_overlapping_bulk_claims_on_postgres_split_the_documents(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    ids = [make_document("draft").id for _ in range(8)]

    def claim(i: int) -> object:
        mine = ids[:6] if i == 0 else ids[2:]
        with session_factory() as session:
            claims = claim_many_for_push(session, mine, lease_seconds=60)
            session.commit()
            return set(claims)

    results = race(2, claim)
    assert all(isinstance(r, set) for r in results), results
    first, second = (set(r) for r in results if isinstance(r, set))
    assert first.isdisjoint(second)
    assert first | second == set(ids)
    with session_factory() as session:
        statuses = set(session.scalars(select(Document.status)))
    assert statuses == {DocumentStatus.pushing.value}
    assert all(len(claim_events(session_factory, i)) == 1 for i in ids)


def test_bulk_and_single_claims_racing_have_exactly_one_winner(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    # The same race on whichever database is configured (SQLite: BEGIN IMMEDIATE).
    ids = [make_document("draft").id for _ in range(4)]
    _race_bulk_against_single(session_factory, ids, ids[1], workers=4)

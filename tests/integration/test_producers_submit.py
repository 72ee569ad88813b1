"""producers.submit(): validate, find the tenant, store, commit, THEN enqueue — on a real DB."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import producers
from producers.intake import Intake, SubmitOutcome, _storable, _unstorable, set_default_intake
from producers.testing import SELLER_DEMO, SELLER_DEMO_2, SELLER_SHOP, bridge_tenants, make_bill
from schemas.erp import validate_bill
from schemas.tenants import TenantsFile
from store.claims import claim_for_push
from store.columns import jsonable
from store.lifecycle import transition
from store.models import Document, DocumentEvent
from store.queries import document_history
from store.states import Event
from worker import queues
from worker.enqueue import Followup, RecordingEnqueuer


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


@pytest.fixture
def enqueuer(session_factory: sessionmaker[Session]) -> CommittedCheckingEnqueuer:
    return CommittedCheckingEnqueuer(session_factory)


@pytest.fixture
def intake(session_factory: sessionmaker[Session], enqueuer: RecordingEnqueuer) -> Intake:
    return Intake(session_factory, bridge_tenants(), enqueuer)


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_new_document_is_stored_committed_and_then_enqueued(
    intake: Intake, enqueuer: CommittedCheckingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    result = intake.submit(make_bill("SO-1"))

    assert result.outcome is SubmitOutcome.created
    assert (result.status, result.tenant, result.seller_tax_id) == ("draft", "demo", SELLER_DEMO)
    assert enqueuer.of(queues.PUSH) == [
        {"document_id": result.document_id, "bill_no": "SO-1", "tenant": "demo"}
    ]
    assert enqueuer.visible_at_send == [True]
    with session_factory() as session:
        document = session.get(Document, result.document_id)
        assert document is not None
        assert document.payload["totalAmount"] == "100.00"  # exact text, never a float
        assert document.total_incl_tax == Decimal("106.00")
        assert document.total_tax == Decimal("6.00")
        assert document.invoice_type == "10xdp"
        [event] = document_history(session, document.id)
        assert (event.event, event.actor, event.to_status) == ("submit", "erp", "draft")


def test_identical_content_is_idempotent_and_not_enqueued_twice(
    intake: Intake, enqueuer: RecordingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    first = intake.submit(make_bill("SO-2"))
    # Same content written differently (text vs numbers, 100 vs 100.00) is the same document.
    again = make_bill("SO-2", totalAmount="100")
    second = intake.submit(again)

    assert second.outcome is SubmitOutcome.unchanged
    assert second.document_id == first.document_id
    assert len(enqueuer.of(queues.PUSH)) == 1
    assert count(session_factory, Document) == 1
    assert count(session_factory, DocumentEvent) == 1


def test_an_invalid_document_returns_its_issues_and_stores_nothing(
    intake: Intake, enqueuer: RecordingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    bill = make_bill("SO-3", totalAmount=Decimal("99.00"))
    bill["billDetail"][0]["amount"] = 100.0  # a Python float: money is never float

    result = intake.submit(bill)

    assert result.outcome is SubmitOutcome.invalid
    assert result.bill_no == "SO-3"
    rules = {(issue.path, issue.rule) for issue in result.issues}
    assert ("billDetail[0].amount", "float_number") in rules
    assert all(issue.message and issue.message_zh and issue.hint for issue in result.issues)
    assert result.http_status == 422
    assert count(session_factory, Document) == 0
    assert enqueuer.sent == []


def test_different_content_while_live_is_a_conflict_and_changes_nothing(
    intake: Intake, enqueuer: RecordingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    first = intake.submit(make_bill("SO-4"))
    changed = intake.submit(make_bill("SO-4", remark="another remark"))

    assert changed.outcome is SubmitOutcome.conflict
    assert (changed.document_id, changed.status, changed.http_status) == (
        first.document_id,
        "draft",
        409,
    )
    assert changed.message and "SO-4" in changed.message
    assert count(session_factory, Document) == 1
    assert len(enqueuer.of(queues.PUSH)) == 1


def test_different_content_after_failed_is_a_new_revision_that_is_pushed(
    intake: Intake, enqueuer: RecordingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    first = intake.submit(make_bill("SO-5"))
    assert first.document_id is not None
    with session_factory() as session:
        claim = claim_for_push(session, first.document_id, lease_seconds=60)
        assert claim is not None
        transition(session, first.document_id, Event.give_up, actor="test")
        session.commit()

    result = intake.submit(make_bill("SO-5", remark="corrected"))

    assert result.outcome is SubmitOutcome.new_revision
    assert result.revision == 2 and result.document_id != first.document_id
    assert [kw["document_id"] for kw in enqueuer.of(queues.PUSH)] == [
        first.document_id,
        result.document_id,
    ]


@pytest.mark.parametrize(
    ("bill", "tenant", "path", "rule"),
    [
        (make_bill("T-1", seller="91110000UNKNOWN001"), None, "sellerTaxpayerId", "unknown_seller"),
        (make_bill("T-2"), "nobody", "tenant", "unknown_tenant"),
        (make_bill("T-3", seller=SELLER_SHOP), "demo", "sellerTaxpayerId", "tenant_mismatch"),
        (
            {**make_bill("T-4", orgCode="ORG-7"), "sellerTaxpayerId": None},
            None,
            "tenant",
            "tenant_required",
        ),
    ],
)
def test_tenant_problems_are_issues_with_their_own_rule(
    intake: Intake, bill: dict[str, Any], tenant: str | None, path: str, rule: str
) -> None:
    result = intake.submit(bill, tenant=tenant)

    assert result.outcome is SubmitOutcome.invalid
    assert [(issue.path, issue.rule) for issue in result.issues] == [(path, rule)]
    assert result.issues[0].message_zh


def test_the_tenant_follows_the_seller_and_org_code_only_bills_need_it_named(
    intake: Intake,
) -> None:
    shop = intake.submit(make_bill("T-5", seller=SELLER_SHOP))
    second_seller = intake.submit(make_bill("T-6", seller=SELLER_DEMO_2))
    org_only = intake.submit(
        {**make_bill("T-7", orgCode="ORG-7"), "sellerTaxpayerId": None}, tenant="shop"
    )

    assert (shop.tenant, shop.seller_tax_id) == ("shop", SELLER_SHOP)
    assert (second_seller.tenant, second_seller.seller_tax_id) == ("demo", SELLER_DEMO_2)
    assert (org_only.outcome, org_only.tenant, org_only.seller_tax_id) == (
        SubmitOutcome.created,
        "shop",
        "ORG-7",
    )


def test_a_bill_object_is_accepted_like_its_dict(intake: Intake) -> None:
    bill = validate_bill(make_bill("SO-6"))

    result = intake.submit(bill)
    again = intake.submit(make_bill("SO-6"))

    assert result.outcome is SubmitOutcome.created
    assert again.outcome is SubmitOutcome.unchanged


def test_inside_the_callers_transaction_nothing_is_committed_or_sent_before_its_commit(
    intake: Intake, enqueuer: CommittedCheckingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        result = intake.submit(make_bill("SO-7"), session=session)
        assert result.outcome is SubmitOutcome.created
        assert enqueuer.sent == []  # not before the caller commits
        session.commit()
    assert enqueuer.of(queues.PUSH) == [
        {"document_id": result.document_id, "bill_no": "SO-7", "tenant": "demo"}
    ]
    assert enqueuer.visible_at_send == [True]


def test_a_rolled_back_caller_transaction_stores_and_sends_nothing(
    intake: Intake, enqueuer: RecordingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        result = intake.submit(make_bill("SO-8"), session=session)
        assert result.outcome is SubmitOutcome.created
        session.rollback()
        # The session is reused: a later commit must not send the dropped push.
        kept = intake.submit(make_bill("SO-9"), session=session)
        session.commit()
    assert [kw["bill_no"] for kw in enqueuer.of(queues.PUSH)] == ["SO-9"]
    assert kept.document_id is not None
    assert count(session_factory, Document) == 1


def test_a_push_registered_in_a_rolled_back_savepoint_is_dropped(
    intake: Intake, enqueuer: RecordingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        intake.submit(make_bill("SO-10"), session=session)
        savepoint = session.begin_nested()
        intake.submit(make_bill("SO-11"), session=session)
        savepoint.rollback()
        with session.begin_nested():  # releasing a savepoint is not the caller's COMMIT
            pass
        assert enqueuer.sent == []
        session.commit()
    assert [kw["bill_no"] for kw in enqueuer.of(queues.PUSH)] == ["SO-10"]
    assert count(session_factory, Document) == 1


def test_a_batch_answers_in_order_and_one_bad_document_blocks_nothing(
    intake: Intake, enqueuer: RecordingEnqueuer, session_factory: sessionmaker[Session]
) -> None:
    results = intake.submit_many(
        [
            make_bill("B-1"),
            {"billNo": "B-2"},
            make_bill("B-3"),
            make_bill("B-1"),  # the same document again inside the batch
            make_bill("B-3", remark="changed"),  # different content while B-3 is live
            "not a document",
        ]
    )

    assert [r.outcome.value for r in results] == [
        "created",
        "invalid",
        "created",
        "unchanged",
        "conflict",
        "invalid",
    ]
    assert results[5].issues[0].rule == "type"
    assert count(session_factory, Document) == 2
    assert [kw["bill_no"] for kw in enqueuer.pushes()] == ["B-1", "B-3"]
    assert [m.task for m in enqueuer.sent] == [queues.PUSH_BATCH]  # one message for both


def test_a_broker_that_is_down_loses_no_document(
    session_factory: sessionmaker[Session],
) -> None:
    broken = RecordingEnqueuer(fail=True)
    intake = Intake(session_factory, bridge_tenants(), broken)

    result = intake.submit(make_bill("SO-12"))

    assert result.outcome is SubmitOutcome.created
    with session_factory() as session:
        document = session.get(Document, result.document_id)
        # Still a due draft: the worker's sweeper sends the lost push.
        assert document is not None and document.status == "draft"
        assert document.next_attempt_at is not None


@pytest.fixture
def default_intake(intake: Intake) -> Iterator[Intake]:
    set_default_intake(intake)
    try:
        yield intake
    finally:
        set_default_intake(None)


def test_the_module_level_submit_uses_the_configured_intake(
    default_intake: Intake, enqueuer: RecordingEnqueuer
) -> None:
    result = producers.submit(make_bill("SO-13"), actor="erp-hook")

    assert result.outcome is SubmitOutcome.created
    assert enqueuer.of(queues.PUSH)[0]["bill_no"] == "SO-13"


def test_the_tenants_auto_invoice_default_fills_a_missing_auto_invoice_only(
    session_factory: sessionmaker[Session],
) -> None:
    raw = bridge_tenants().model_dump(mode="python")
    raw["tenants"][0]["auto_invoice"] = False
    manual = Intake(session_factory, TenantsFile.model_validate(raw), RecordingEnqueuer())

    defaulted = manual.submit(make_bill("AI-1"))
    explicit = manual.submit(make_bill("AI-2", autoInvoice="1"))
    automatic = Intake(session_factory, bridge_tenants(), RecordingEnqueuer())
    # The same ERP content under a changed tenant setting is still the same document.
    again = automatic.submit(make_bill("AI-1"))

    with session_factory() as session:
        payloads = {
            doc.bill_no: doc.payload["autoInvoice"] for doc in session.scalars(select(Document))
        }
    assert payloads == {"AI-1": "0", "AI-2": "1"}
    assert (defaulted.outcome, explicit.outcome) == (SubmitOutcome.created, SubmitOutcome.created)
    assert again.outcome is SubmitOutcome.unchanged


def test_a_batch_stores_the_bills_hash_and_the_defaulted_wire_payload(
    session_factory: sessionmaker[Session],
) -> None:
    raw = bridge_tenants().model_dump(mode="python")
    raw["tenants"][0]["auto_invoice"] = False
    manual = Intake(session_factory, TenantsFile.model_validate(raw), RecordingEnqueuer())
    bills = [make_bill("HB-1", lines=2), make_bill("HB-2", autoInvoice="1")]

    results = manual.submit_many(bills)

    assert [r.outcome for r in results] == [SubmitOutcome.created, SubmitOutcome.created]
    with session_factory() as session:
        stored = {doc.bill_no: doc for doc in session.scalars(select(Document))}
    for bill in bills:
        valid = validate_bill(bill)
        document = stored[valid.billNo]
        # The hash is the ERP's bill's (before the tenant default), as a single submit stores.
        assert document.content_hash == valid.content_hash()
        wire = valid.to_wire()
        wire.setdefault("autoInvoice", "0")
        assert document.payload == jsonable(wire)  # the column stores Decimals as text
    # The same content through the per-document path is recognised as the same document.
    assert manual.submit(make_bill("HB-1", lines=2)).outcome is SubmitOutcome.unchanged


@pytest.mark.parametrize(
    "value",
    [
        make_bill("ST-1"),
        {"billNo": "ST-2\x00", "billDetail": [{"amount": Decimal("1E+41")}]},
        {"a": ["中文", "\ud800"], 3: "x"},
        {"a\x00": 1, "b": [10**40, -(10**40) + 1, Decimal("NaN"), Decimal("-1E-41")]},
        {"ok": [True, None, 1.5, ("t", "\x00")], "n": 10**40 - 1},
        ["x", {"y": Decimal("1E+40")}],
    ],
)
def test_the_quick_storability_check_agrees_with_the_reporting_one(value: object) -> None:
    assert _storable(value) is (next(_unstorable(value), None) is None)

"""The worker under faults: unknown outcomes, expiring tokens, refusals, bad credentials,
withdrawals, lost callbacks, dead workers (lease expiry), paused tenants, transient errors.

Simulator over real HTTP, real database, real Redis; messages run inline (``drain``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from simulator.testing import CallbackRecorder, CloudSession, SimulatorHandle, make_bill
from store.claims import claim_for_push
from store.columns import utcnow
from store.db import unit_of_work
from store.lifecycle import RevisionConflict, update_fields
from store.models import CloudCall, Document, TenantState
from store.states import ISSUE_OVERDUE
from store.tenants import pause_tenant, resume_tenant
from tests.integration.test_worker_world import DEMO_SELLER, SHOP_SELLER, World, make_world
from worker import queues
from worker.testing import drain, store_bill

pytest_plugins = ["tests.integration.test_worker_world"]

NO_DOUBLE_ISSUE: dict[str, list[object]] = {"live_twice": [], "over_issued": []}


def push_calls(world: World) -> dict[str, int]:
    calls: dict[str, int] = world.sim.stats()["calls"].get("BILL.PUSH", {})
    return calls


def ledger(world: World, interface: str | None = None) -> list[CloudCall]:
    with world.sessions() as session:
        statement = select(CloudCall).order_by(CloudCall.id)
        if interface is not None:
            statement = statement.where(CloudCall.interface == interface)
        return list(session.scalars(statement))


def travel(world: World, seconds: float) -> None:
    """Move the worker's clock forward (no sleeping in tests)."""
    offset = timedelta(seconds=seconds)
    world.rt.clock = lambda: utcnow() + offset


# --------------------------------------------------------------------------- unknown outcome


def test_push_committed_then_connection_dropped_is_settled_by_a_query(
    declared_world: World,
) -> None:
    """With ``unknown_bill`` declared, an empty invoiceList proves the bill is there (the
    undeclared case probes first: tests/integration/test_worker_dialects.py)."""
    world = declared_world
    world.sim.set_faults(drop_after_commit=1.0)
    doc_id = store_bill(
        world.sessions, "demo", make_bill("DROP-1", DEMO_SELLER, auto_invoice=False)
    )
    assert world.push(doc_id) == "in_doubt"
    assert world.enqueuer.of(queues.RESOLVE_IN_DOUBT) == [
        {"document_id": doc_id, "bill_no": "DROP-1", "tenant": "demo"}
    ]
    world.sim.set_faults()
    steps = drain(world.rt, world.enqueuer)
    assert [(s.task, s.status) for s in steps] == [(queues.RESOLVE_IN_DOUBT, "pushed")]
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "pushed"]
    stats = world.sim.stats()
    assert sum(stats["calls"]["BILL.PUSH"].values()) == 1  # never pushed again
    assert stats["doubleIssue"] == NO_DOUBLE_ISSUE
    assert [c.outcome for c in ledger(world, "BILL.PUSH")] == ["unknown_outcome"]


def test_in_doubt_goes_straight_to_invoiced_when_the_query_shows_invoices(world: World) -> None:
    world.sim.set_faults(push_5xx_after_commit=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("DROP-2", DEMO_SELLER))
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    world.sim.wait_for(lambda: world.sim.bill("DROP-2")["invoices"])
    steps = drain(world.rt, world.enqueuer)
    assert steps[0].status == "invoiced"
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "pushed", "invoiced"]
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_absent_after_an_unknown_outcome_pushes_again_with_the_same_bill_no(world: World) -> None:
    world.sim.set_faults(drop_before=1.0)  # closed before the cloud stored anything
    doc_id = store_bill(
        world.sessions, "demo", make_bill("DROP-3", DEMO_SELLER, auto_invoice=False)
    )
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    steps = drain(world.rt, world.enqueuer)
    assert [(s.task, s.status) for s in steps] == [
        (queues.RESOLVE_IN_DOUBT, "draft"),
        (queues.PUSH, "pushed"),
    ]
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "draft", "pushing", "pushed"]
    assert world.doc(doc_id).push_attempt == 2
    assert [b["billNo"] for b in world.sim.bills()] == ["DROP-3"]
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_in_doubt_gives_up_with_an_actionable_reason(world: World) -> None:
    world.sim.set_faults(drop_after_commit=1.0)
    doc_id = store_bill(
        world.sessions, "demo", make_bill("DROP-4", DEMO_SELLER, auto_invoice=False)
    )
    world.push(doc_id)
    world.enqueuer.take()
    world.sim.set_faults(api_5xx_before=1.0)  # every query: 503, nothing learnt
    assert world.run(queues.RESOLVE_IN_DOUBT, document_id=doc_id) == "in_doubt"
    assert world.doc(doc_id).status == "in_doubt"
    travel(world, 2 * 3600)  # beyond FAPIAO_IN_DOUBT__MAX_AGE_SECONDS
    assert world.run(queues.RESOLVE_IN_DOUBT, document_id=doc_id) == "failed"
    document = world.doc(doc_id)
    assert "DROP-4" in (document.last_error_message or "")
    assert "replay" in (document.last_error_message or "")
    assert push_calls(world) == {"dropped_after_commit": 1}


# --------------------------------------------------------------------------- tokens


def test_tokens_expiring_mid_run_cost_one_refresh_and_nothing_fails(world: World) -> None:
    docs = [
        store_bill(world.sessions, "demo", make_bill(f"TOK-{i}", DEMO_SELLER, auto_invoice=False))
        for i in range(6)
    ]
    assert [world.push(d) for d in docs[:3]] == ["pushed"] * 3
    assert world.sim.expire_tokens("demo") >= 1
    assert [world.push(d) for d in docs[3:]] == ["pushed"] * 3
    assert world.sim.stats()["tokens"]["demo"] == {"app": 2, "access": 2}
    assert world.rt.tokens.refreshes == 2
    outcomes = [c.outcome for c in ledger(world, "BILL.PUSH")]
    assert outcomes.count("auth_expired") == 1
    assert outcomes.count("accepted") == 6
    assert {world.doc(d).status for d in docs} == {"pushed"}


def test_auth_failure_that_survives_a_refresh_pauses_the_tenant_and_the_document_waits(
    world: World,
) -> None:
    world.sim.set_faults(auth_fail=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("AUTH-1", DEMO_SELLER))
    assert world.push(doc_id) == "draft"  # waits for the operator, does not fail
    document = world.doc(doc_id)
    assert document.status == "draft"
    assert "app_id" in (document.last_error_message or "")
    with world.sessions() as session:
        state = session.get(TenantState, "demo")
        assert state is not None and state.paused
        assert "app_id" in (state.paused_reason or "")
    assert [c.outcome for c in ledger(world, "BILL.PUSH")] == ["auth_expired", "auth_expired"]
    assert world.enqueuer.of(queues.PUSH) == []  # nothing hammers the broken config
    drain(world.rt, world.enqueuer)
    assert world.run(queues.SWEEP).startswith("drafts=0")  # paused: not swept either

    # The operator fixes the credentials and resumes the tenant: no replay needed.
    world.sim.set_faults()
    with unit_of_work(world.sessions) as session:
        resume_tenant(session, "demo")
    assert world.run(queues.SWEEP).startswith("drafts=1")
    drain(world.rt, world.enqueuer)
    assert world.doc(doc_id).status in ("pushed", "invoiced")
    assert "give_up" not in [e.event for e in world.events(doc_id)]


# --------------------------------------------------------------------------- refusals


def test_business_refusal_is_rejected_with_the_clouds_words(world: World) -> None:
    bill = make_bill("REJ-1", DEMO_SELLER, lines=2)
    bill["totalAmount"] = Decimal("150.00")  # lines add up to 200.00
    doc_id = store_bill(world.sessions, "demo", bill, check=False)
    assert world.push(doc_id) == "rejected"
    document = world.doc(doc_id)
    assert document.last_error_code == "-10007"
    assert document.last_error_message == "价税合计金额不对"
    reasons = [e.reason or "" for e in world.events(doc_id)]
    assert any("价税合计金额不对" in r for r in reasons)
    assert world.enqueuer.of(queues.PUSH) == []  # a refusal is never retried


@pytest.fixture
def wrong_secret_world(
    sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[World]:
    specs: list[dict[str, Any]] = [dict(spec) for spec in sim.specs]
    specs[0]["app_secret"] = "sim-this-is-not-the-secret"  # tenant "demo"
    yield from make_world(
        sim, callbacks, session_factory, database_url, redis_url, tmp_path, None, specs
    )


def test_bad_credentials_fail_naming_the_setting_and_pause_only_that_tenant(
    wrong_secret_world: World,
) -> None:
    world = wrong_secret_world
    first = store_bill(world.sessions, "demo", make_bill("CRED-1", DEMO_SELLER))
    second = store_bill(world.sessions, "demo", make_bill("CRED-2", DEMO_SELLER))
    other = store_bill(world.sessions, "shop", make_bill("CRED-3", SHOP_SELLER))
    assert world.push(first) == "draft"  # waits while the tenant is paused
    assert world.doc(first).status == "draft"
    reason = world.doc(first).last_error_message or ""
    assert "app_secret" in reason and "'demo'" in reason
    assert world.push(second) == "paused"
    assert world.doc(second).status == "draft"  # waits, does not fail
    assert world.push(other) == "pushed"  # another tenant is not slowed
    with world.sessions() as session:
        paused = session.scalars(select(TenantState.tenant).where(TenantState.paused)).all()
    assert paused == ["demo"]


def test_transient_errors_retry_with_backoff_then_give_up(world: World) -> None:
    world.sim.set_faults(push_system_error=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("TRANS-1", DEMO_SELLER))
    assert world.push(doc_id) == "draft"
    retry = world.doc(doc_id)
    assert retry.next_attempt_at is not None and retry.next_attempt_at > retry.status_changed_at
    steps = drain(world.rt, world.enqueuer)
    # A 9999 may have come after the bill was stored: each retry asks the cloud first (the
    # in-doubt resolver finds it absent and hands it back to draft), so no second bill.
    assert [(s.task, s.status) for s in steps] == [
        (queues.PUSH, "in_doubt"),
        (queues.RESOLVE_IN_DOUBT, "draft"),
        (queues.PUSH, "draft"),
        (queues.PUSH, "in_doubt"),
        (queues.RESOLVE_IN_DOUBT, "failed"),
    ]  # 4 attempts in all
    document = world.doc(doc_id)
    assert document.push_attempt == 4
    assert "gave up after 4 push attempts" in (document.last_error_message or "")
    assert push_calls(world) == {"9999": 2}  # the other two attempts were the queries first


@pytest.mark.parametrize("duplicate_bill", ["accepted", "refused"])
def test_a_9999_that_came_after_the_bill_was_stored_never_makes_a_second_bill(
    world: World, duplicate_bill: str
) -> None:
    world.sim.set_dialect(duplicate_bill=duplicate_bill)
    world.sim.set_faults(push_system_error_after_commit=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("TRANS-AC", DEMO_SELLER))
    assert world.push(doc_id) == "draft"  # 9999: transient, a retry is owed
    world.sim.set_faults()
    drain(world.rt, world.enqueuer)
    assert world.doc(doc_id).status in ("pushed", "invoiced")
    # The retry asked first (the 9999 may have come after the store): one bill, no double issue.
    assert len(world.sim.bills(billNo="TRANS-AC")) == 1
    assert push_calls(world) == {"system_error_after_commit": 1}
    assert world.sim.stats()["doubleIssue"] == {"live_twice": [], "over_issued": []}


# --------------------------------------------------------------------------- withdraw


def test_withdraw_before_issuance_withdraws(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("WD-1", DEMO_SELLER, auto_invoice=False))
    assert world.push(doc_id) == "pushed"
    world.apply(doc_id, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "withdrawn"
    assert world.path(doc_id)[-2:] == ["withdrawing", "withdrawn"]
    assert world.sim.bill("WD-1")["state"] == "withdrawn"


def test_withdraw_after_issuance_is_refused_and_keeps_the_true_state(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("WD-2", DEMO_SELLER))
    assert world.push(doc_id) == "pushed"
    world.sim.wait_for(lambda: world.sim.bill("WD-2")["invoices"])
    world.apply(doc_id, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "invoiced"
    document = world.doc(doc_id)
    assert "不允许撤回" in (document.last_error_message or "")
    assert world.path(doc_id)[-2:] == ["withdrawing", "invoiced"]
    assert world.sim.stats()["bills"].get("withdrawn", 0) == 0


def test_duplicate_refusal_the_query_contradicts_fails_instead_of_looping(world: World) -> None:
    """ "已存在" yet 单据不存在: an operator has to look; never push → query → push forever."""
    world.sim.admin.put("/_sim/bill-rules", json={"refuse": {"DUP-9": "-10009"}}).raise_for_status()
    doc_id = store_bill(world.sessions, "demo", make_bill("DUP-9", DEMO_SELLER))
    assert world.push(doc_id) == "in_doubt"  # a duplicate answer is settled by a query
    steps = drain(world.rt, world.enqueuer, max_steps=50)
    assert steps[-1].status == "failed"
    document = world.doc(doc_id)
    assert document.status == "failed"
    reason = document.last_error_message or ""
    assert "duplicate" in reason and "does not" in reason and "DUP-9" in reason
    assert [c.outcome for c in ledger(world, "BILL.PUSH")] == ["duplicate"]  # pushed once
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "failed"]
    # It left in_doubt unsettled: different content must wait for a withdrawal.
    changed = make_bill("DUP-9", DEMO_SELLER, amount="200.00")
    with pytest.raises(RevisionConflict, match="never settled"):
        store_bill(world.sessions, "demo", changed)


def test_pushes_that_never_reach_the_cloud_stop_after_max_attempts(world: World) -> None:
    world.sim.set_faults(drop_before=1.0)  # every push lost before the cloud stored it
    doc_id = store_bill(world.sessions, "demo", make_bill("DROP-9", DEMO_SELLER))
    assert world.push(doc_id) == "in_doubt"
    drain(world.rt, world.enqueuer, max_steps=100)
    document = world.doc(doc_id)
    assert document.status == "failed"
    assert document.push_attempt == 4  # push.max_attempts in fast_settings
    assert "4" in (document.last_error_message or "")
    assert len(ledger(world, "BILL.PUSH")) == 4


def test_withdraw_of_a_bill_the_cloud_never_had_is_withdrawn(world: World) -> None:
    world.sim.set_faults(drop_before=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("WD-3", DEMO_SELLER))
    world.push(doc_id)  # in_doubt, the cloud has nothing
    world.sim.set_faults()
    with unit_of_work(world.sessions) as session:  # an operator gave up on it
        from store.lifecycle import transition

        transition(session, doc_id, "give_up", actor="test")
        transition(session, doc_id, "withdraw", actor="test")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "withdrawn"


# --------------------------------------------------------------------------- polling


def test_dropped_callbacks_are_made_up_for_by_polling(world: World) -> None:
    world.sim.set_faults(callback_drop=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("POLL-1", DEMO_SELLER, lines=3))
    assert world.push(doc_id) == "pushed"
    world.sim.wait_for(lambda: world.sim.bill("POLL-1")["invoices"])
    assert world.run(queues.POLL_DUE) == "due=0"  # not due yet
    travel(world, 5)
    assert world.run(queues.POLL_DUE) == "due=1"
    steps = drain(world.rt, world.enqueuer)
    assert [(s.task, s.status) for s in steps] == [(queues.POLL, "invoiced")]
    document = world.doc(doc_id)
    assert document.status == "invoiced"
    assert document.issued_amount == Decimal("339.00")
    assert world.callbacks.received == []


def test_failed_issuance_is_polled_to_invoice_failed(world: World) -> None:
    world.sim.set_faults(issue_fail=1.0, callback_drop=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("POLL-2", DEMO_SELLER))
    world.push(doc_id)
    world.sim.wait_for(lambda: world.sim.bill("POLL-2")["invoices"])
    travel(world, 5)
    world.run(queues.POLL_DUE)
    drain(world.rt, world.enqueuer)
    document = world.doc(doc_id)
    assert document.status == "invoice_failed"
    assert document.last_error_message  # the cloud's issueErrorMessage


def test_invoices_found_after_the_overdue_flag_clear_it(world: World) -> None:
    world.sim.set_faults(callback_drop=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("POLL-3", DEMO_SELLER))
    assert world.push(doc_id) == "pushed"
    with unit_of_work(world.sessions) as session:  # as the poller leaves a slow bill
        update_fields(
            session, doc_id, {"last_error_code": ISSUE_OVERDUE, "last_error_message": "late"}
        )
    world.sim.wait_for(lambda: world.sim.bill("POLL-3")["invoices"])
    assert world.run(queues.POLL, document_id=doc_id) == "invoiced"
    document = world.doc(doc_id)
    assert (document.last_error_code, document.last_error_message) == (None, None)


# --------------------------------------------------------------------------- sweeper


def test_a_worker_dying_mid_push_is_recovered_by_lease_expiry(declared_world: World) -> None:
    world = declared_world
    doc_id = store_bill(
        world.sessions, "demo", make_bill("LEASE-1", DEMO_SELLER, auto_invoice=False)
    )
    # A worker claims and pushes, then dies before recording the answer.
    with unit_of_work(world.sessions) as session:
        claim = claim_for_push(session, doc_id, 10)
        assert claim is not None
    with CloudSession(world.sim, "demo") as cloud, world.sessions() as session:
        document = session.get(Document, doc_id)
        assert document is not None
        assert cloud.push(document.payload)["success"] is True
    assert world.run(queues.SWEEP).startswith("drafts=0 leases=0")
    travel(world, 3600)
    assert "leases=1" in world.run(queues.SWEEP)
    steps = drain(world.rt, world.enqueuer)
    assert [(s.task, s.status) for s in steps] == [(queues.RESOLVE_IN_DOUBT, "pushed")]
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "pushed"]
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_the_sweeper_re_enqueues_drafts_whose_message_was_lost(world: World) -> None:
    docs = [
        store_bill(world.sessions, "demo", make_bill(f"LOST-{i}", DEMO_SELLER)) for i in range(3)
    ]
    # Nothing was ever enqueued (broker down at submit time).
    assert world.run(queues.SWEEP).startswith("drafts=3")
    assert world.enqueuer.of(queues.PUSH_BATCH) == [  # one batch message (push.batch_size)
        {
            "document_ids": docs,
            "bill_nos": ["LOST-0", "LOST-1", "LOST-2"],
            "tenants": ["demo"] * 3,
        }
    ]
    assert world.run(queues.SWEEP).startswith("drafts=0")  # claimed: not sent twice
    drain(world.rt, world.enqueuer)
    assert {world.doc(d).status for d in docs} == {"pushed"}


def test_paused_tenant_documents_wait_in_draft(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("PAUSE-1", DEMO_SELLER))
    with unit_of_work(world.sessions) as session:
        pause_tenant(session, "demo", "operator")
    assert world.push(doc_id) == "paused"
    assert world.run(queues.SWEEP).startswith("drafts=0")
    assert world.doc(doc_id).status == "draft"
    assert push_calls(world) == {}


# --------------------------------------------------------------------------- token refresh


def test_proactive_refresh_logs_in_before_the_first_push(world: World) -> None:
    assert world.run(queues.REFRESH_TOKENS) == "fresh=2 paused=0"
    assert world.run(queues.REFRESH_TOKENS) == "fresh=2 paused=0"  # still fresh: no new login
    doc_id = store_bill(world.sessions, "demo", make_bill("REFRESH-1", DEMO_SELLER))
    assert world.push(doc_id) == "pushed"
    tokens = world.sim.stats()["tokens"]
    assert tokens["demo"] == {"app": 1, "access": 1}
    assert tokens["shop"] == {"app": 1, "access": 1}


def test_proactive_refresh_pauses_a_tenant_with_bad_credentials(
    wrong_secret_world: World,
) -> None:
    world = wrong_secret_world
    assert world.run(queues.REFRESH_TOKENS) == "fresh=1 paused=1"
    with world.sessions() as session:
        state = session.get(TenantState, "demo")
        assert state is not None and state.paused
        assert "app_secret" in (state.paused_reason or "")
    assert world.run(queues.REFRESH_TOKENS) == "fresh=1 paused=0"  # paused tenants are skipped

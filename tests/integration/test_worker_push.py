"""Pushing: ``fapiao.push`` and ``fapiao.push_batch`` (every per-document outcome, races,
batches on the wire), refusals, transient retries and 9999s. Fixtures: tests/integration/
conftest.py; World and helpers: tests/integration/worlds.py.

Simulator over real HTTP, real database, real Redis; messages run inline (``drain``) except
``test_a_batch_message_through_a_real_celery_worker``. Per-bill answers come from the
simulator's bill rules (``refuse``: ``-10007`` refused, ``9999`` transient, ``-10009``
duplicate).
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from simulator.testing import SimulatorHandle, make_bill
from store.claims import claim_for_push
from store.columns import utcnow
from store.db import unit_of_work
from store.lifecycle import transition
from store.models import Document, DocumentEvent
from store.tenants import pause_tenant
from tests.integration.worlds import (
    DEMO_SELLER,
    NO_DOUBLE_ISSUE,
    SHOP_SELLER,
    World,
    demo_bill,
    push_calls,
    push_ledger,
    refuse,
)
from worker import queues
from worker.app import create_app
from worker.enqueue import CeleryEnqueuer, push_messages
from worker.runtime import build_runtime
from worker.services import push as push_service
from worker.services.push import push_documents
from worker.tasks import reset_runtime
from worker.testing import drain, fast_settings, store_bill, wait_until

# --------------------------------------------------------------------------- every outcome


def test_every_per_document_outcome_in_one_batch(world: World) -> None:
    sessions = world.sessions
    # Pushed first and alone: its task gathers every other due draft of its tenant.
    already = store_bill(sessions, "demo", demo_bill("BAT-DONE"))
    assert world.push(already) == "pushed"
    accepted = store_bill(sessions, "demo", demo_bill("BAT-OK"))
    refused = store_bill(sessions, "demo", demo_bill("BAT-REJ"))
    transient = store_bill(sessions, "demo", demo_bill("BAT-TRANS"))
    duplicate = store_bill(sessions, "demo", demo_bill("BAT-DUP"))
    broken = demo_bill("BAT-BAD")
    del broken["billDetail"]
    bad_payload = store_bill(sessions, "demo", broken, check=False)
    unknown_tenant = store_bill(sessions, "ghost", demo_bill("BAT-GHOST"))
    paused = store_bill(sessions, "shop", make_bill("BAT-PAUSED", SHOP_SELLER))
    world.enqueuer.take()
    refuse(world, {"BAT-REJ": "-10007", "BAT-TRANS": "9999", "BAT-DUP": "-10009"})
    with unit_of_work(sessions) as session:
        pause_tenant(session, "shop", "operator")

    ids = [accepted, refused, transient, duplicate, bad_payload, unknown_tenant, paused,
           already, 999_999, accepted]  # fmt: skip
    outcomes = push_documents(world.rt, ids)

    assert [o.status for o in outcomes] == [
        "pushed", "rejected", "draft", "in_doubt", "failed", "failed", "paused",
        "skipped", "skipped", "skipped",
    ]  # fmt: skip
    assert "stored payload is not a valid bill" in outcomes[4].detail
    assert "'ghost' is not in the tenants file" in outcomes[5].detail
    assert outcomes[7].detail == "document is pushed, not draft"
    assert outcomes[8].detail == "no such document"
    assert outcomes[9].detail == "listed twice in the batch"

    # Documents, event paths and error fields as a single push leaves them.
    assert world.path(accepted)[-2:] == ["pushing", "pushed"]
    rejected = world.doc(refused)
    assert (rejected.status, rejected.last_error_code) == ("rejected", "-10007")
    retried = world.doc(transient)
    assert retried.status == "draft" and retried.push_attempt == 1
    assert retried.next_attempt_at is not None
    assert world.doc(duplicate).status == "in_doubt"
    assert world.doc(bad_payload).last_error_message == outcomes[4].detail
    assert world.path(unknown_tenant) == ["draft", "pushing", "failed"]
    assert world.path(paused) == ["draft"]  # waits, not even claimed
    assert world.path(already) == ["draft", "pushing", "pushed"]  # untouched by the batch

    # One claim event per claimed document, all with attempt 1 and the worker as actor.
    with sessions() as session:
        claims = session.execute(
            select(DocumentEvent.document_id, DocumentEvent.attempt)
            .where(DocumentEvent.event == "claim", DocumentEvent.document_id != already)
            .order_by(DocumentEvent.document_id)
        ).all()
    assert [tuple(c) for c in claims] == sorted(
        (d, 1) for d in (accepted, refused, transient, duplicate, bad_payload, unknown_tenant)
    )

    # One BILL.PUSH per sendable document, recorded and completed.
    calls = {c.document_id: c.outcome for c in push_ledger(world) if c.document_id != already}
    assert calls == {
        accepted: "accepted",
        refused: "rejected",
        transient: "transient",
        duplicate: "duplicate",
    }

    # Follow-ups: a retry push and an in-doubt query, sent only after the batch returned.
    followups = [f for o in outcomes for f in o.followups]
    assert world.enqueuer.sent == []
    assert [(f.task, f.kwargs["document_id"]) for f in followups] == [
        (queues.PUSH, transient),
        (queues.RESOLVE_IN_DOUBT, duplicate),
    ]
    world.rt.dispatch(followups)
    refuse(world, {})
    steps = drain(
        world.rt,
        world.enqueuer,
        skip=lambda f: f.task == queues.RESOLVE_IN_DOUBT and f.kwargs["document_id"] == duplicate,
    )
    # The 9999 may have come after the bill was stored: the retry asks first (in doubt, the
    # query finds nothing, back to draft), then pushes.
    assert [(s.task, s.status) for s in steps] == [
        (queues.PUSH, "in_doubt"),
        (queues.RESOLVE_IN_DOUBT, "draft"),
        (queues.PUSH, "pushed"),
    ]
    assert world.doc(transient).push_attempt == 3
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_the_task_runs_a_batch_and_reports_a_count_per_state(world: World) -> None:
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BTASK-{i}")) for i in range(3)]
    refuse(world, {"BTASK-2": "-10007"})
    status = world.run(
        queues.PUSH_BATCH,
        document_ids=ids,
        bill_nos=[f"BTASK-{i}" for i in range(3)],
        tenants=["demo"] * 3,
    )
    assert status == "pushed=2 rejected=1"
    assert [world.doc(d).status for d in ids] == ["pushed", "pushed", "rejected"]


# --------------------------------------------------------------------------- races


@pytest.mark.postgres_only
def test_a_document_claimed_by_another_worker_meanwhile_is_skipped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BRACE-{i}")) for i in range(3)]
    victim = ids[1]
    real = push_service.claim_many_for_push

    def claim_after_a_rival(session: Session, *args: Any, **kwargs: Any) -> Any:
        # Another worker claims and commits between this batch's read and its claim.
        with unit_of_work(world.sessions) as rival:
            assert claim_for_push(rival, victim, 60, actor="rival") is not None
        return real(session, *args, **kwargs)

    monkeypatch.setattr(push_service, "claim_many_for_push", claim_after_a_rival)
    outcomes = push_documents(world.rt, ids)
    assert [o.status for o in outcomes] == ["pushed", "skipped", "pushed"]
    assert outcomes[1].detail == "another worker claimed it"
    claims = [e for e in world.events(victim) if e.event == "claim"]
    assert [(e.actor, e.attempt) for e in claims] == [("rival", 1)]
    assert world.doc(victim).status == "pushing"  # the rival's to finish
    assert sorted(c.document_id for c in push_ledger(world)) == [ids[0], ids[2]]


def test_a_lost_race_when_applying_is_handled_per_document(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BLATE-{i}")) for i in range(4)]
    late_accept, late_refusal = ids[1], ids[2]
    refuse(world, {"BLATE-2": "-10007"})
    real = push_service._call

    def sweeper_first(rt: Any, **kw: Any) -> Any:
        # The lease "expired" while this call was queued: the sweeper made it in_doubt.
        if kw["document_id"] in (late_accept, late_refusal):
            with unit_of_work(world.sessions) as session:
                transition(
                    session, kw["document_id"], "unsure", actor="sweeper",
                    expected_status="pushing", attempt=kw["attempt"],
                )  # fmt: skip
        return real(rt, **kw)

    monkeypatch.setattr(push_service, "_call", sweeper_first)
    outcomes = push_documents(world.rt, ids)
    assert [o.status for o in outcomes] == ["pushed", "pushed", "skipped", "pushed"]
    assert world.path(late_accept) == ["draft", "pushing", "in_doubt", "pushed"]
    late = world.events(late_accept)[-1]
    assert "answer arrived after the lease expired" in (late.reason or "")
    # A refusal does not land on in_doubt: the in-doubt resolver decides that one.
    assert world.doc(late_refusal).status == "in_doubt"
    assert outcomes[2].detail == "document moved on before refused was applied"


def test_a_failed_apply_transaction_leaves_the_batch_to_the_lease_safety_net(
    declared_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = declared_world
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BFAIL-{i}")) for i in range(3)]
    real = push_service._write
    written: list[int] = []

    def fail_on_the_second(rt: Any, session: Session, plan: Any) -> Any:
        if written:
            raise RuntimeError("database went away")
        written.append(plan.document_id)
        return real(rt, session, plan)

    monkeypatch.setattr(push_service, "_write", fail_on_the_second)
    with pytest.raises(RuntimeError, match="database went away"):
        push_documents(world.rt, ids)
    monkeypatch.undo()
    # The first answer was written in the same transaction: rolled back with the others.
    assert [world.doc(d).status for d in ids] == ["pushing"] * 3
    assert len(push_ledger(world)) == 3  # the cloud has them all
    offset = world.rt.policy.push_lease * 5
    world.rt.clock = lambda: utcnow() + offset
    assert "leases=3" in world.run(queues.SWEEP)
    drain(world.rt, world.enqueuer)
    assert [world.path(d) for d in ids] == [["draft", "pushing", "in_doubt", "pushed"]] * 3
    assert world.sim.stats()["calls"]["BILL.PUSH"] == {"success": 3}
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_a_call_that_raises_leaves_only_its_document_to_the_lease(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BRAISE-{i}")) for i in range(3)]
    real = push_service._call

    def ledger_gone_for_the_second(rt: Any, **kw: Any) -> Any:
        if kw["document_id"] == ids[1]:
            raise ConnectionError("the ledger's database went away after the request left")
        return real(rt, **kw)

    monkeypatch.setattr(push_service, "_call", ledger_gone_for_the_second)
    outcomes = push_documents(world.rt, ids)
    assert [o.status for o in outcomes] == ["pushed", "pushing", "pushed"]
    assert "lease expiry" in outcomes[1].detail
    assert world.doc(ids[1]).status == "pushing"  # the sweeper's lease expiry settles it
    assert sorted(c.document_id for c in push_ledger(world)) == [ids[0], ids[2]]


def test_redis_down_before_sending_is_transient_not_unknown(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BREDIS-{i}")) for i in range(2)]

    def token_cache_down(*_args: Any, **_kw: Any) -> str:
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(world.rt.tokens, "get", token_cache_down)
    outcomes = push_documents(world.rt, ids)
    # Redis is only used before the bill leaves: back to draft and retried, not in doubt.
    assert [o.status for o in outcomes] == ["draft", "draft"]
    assert all("Redis unavailable" in o.detail for o in outcomes)
    assert push_ledger(world) == []
    assert [f.task for o in outcomes for f in o.followups] == [queues.PUSH, queues.PUSH]
    assert [world.doc(i).status for i in ids] == ["draft", "draft"]


def test_a_call_with_no_lease_left_is_not_sent_and_retried(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BLEASE-{i}")) for i in range(2)]
    # The batch started, then (for every call) its clock is far past the claim's lease.
    monkeypatch.setattr(push_service, "monotonic", iter([0.0, 1e9, 1e9]).__next__)
    outcomes = push_documents(world.rt, ids)
    assert [o.status for o in outcomes] == ["draft", "draft"]
    assert "not sent" in outcomes[0].detail
    assert push_ledger(world) == []  # nothing left for the cloud
    assert [f.task for o in outcomes for f in o.followups] == [queues.PUSH, queues.PUSH]


# --------------------------------------------------------------------------- sending batches


def queued(client: redis.Redis, queue: str) -> list[tuple[str, dict[str, Any]]]:
    messages = []
    for raw in reversed(cast(list[bytes], client.lrange(queue, 0, -1))):
        envelope = json.loads(raw)
        _, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        messages.append((envelope["headers"]["task"], kwargs))
    return messages


def test_push_messages_go_in_batches_of_batch_size(redis_url: str, tmp_path: Path) -> None:
    settings = fast_settings(
        database_url="sqlite:///unused.db",
        redis_url=redis_url,
        tenants_file=tmp_path / "none.toml",
        push={"batch_size": 2},
    )
    app = create_app(settings)
    client = redis.Redis.from_url(redis_url)
    try:
        pushes = [(10 + i, f"ENQ-{i}", "demo" if i % 2 else "shop") for i in range(5)]
        enqueuer = CeleryEnqueuer(app)
        assert enqueuer.send(push_messages(pushes, settings.push.batch_size)) == 3
        pair = ["shop", "demo"]
        assert queued(client, "push") == [
            ("fapiao.push_batch",
             {"document_ids": [10, 11], "bill_nos": ["ENQ-0", "ENQ-1"], "tenants": pair}),
            ("fapiao.push_batch",
             {"document_ids": [12, 13], "bill_nos": ["ENQ-2", "ENQ-3"], "tenants": pair}),
            ("fapiao.push", {"document_id": 14, "bill_no": "ENQ-4", "tenant": "shop"}),
        ]  # fmt: skip
        client.delete("push")
        assert enqueuer.send(push_messages(pushes[:3], 10)) == 1
        assert [task for task, _ in queued(client, "push")] == ["fapiao.push_batch"]
    finally:
        client.close()


def test_a_batch_message_through_a_real_celery_worker(
    sim: SimulatorHandle,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    settings = fast_settings(
        database_url=database_url,
        redis_url=redis_url,
        tenants_file=sim.write_tenants_file(tmp_path / "tenants.toml"),
        push={"batch_size": 5, "batch_concurrency": 4},
    )
    app = create_app(settings)
    reset_runtime(
        app, build_runtime(settings, enqueuer=CeleryEnqueuer(app), sessions=session_factory)
    )
    try:
        sim.set_faults(latency_ms=20)
        bill_nos = [f"BCEL-{i}" for i in range(12)]
        ids = [store_bill(session_factory, "demo", demo_bill(no)) for no in bill_nos]
        owed = [(d, no, "demo") for d, no in zip(ids, bill_nos, strict=True)]
        assert CeleryEnqueuer(app).send(push_messages(owed, settings.push.batch_size)) == 3
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
            wait_until(lambda: all_pushed(session_factory, ids), timeout=60)
        assert sim.stats()["tokens"]["demo"] == {"app": 1, "access": 1}
        assert len(sim.bills()) == 12
        assert sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE
    finally:
        reset_runtime(app)


def all_pushed(sessions: sessionmaker[Session], ids: list[int]) -> bool:
    with sessions() as session:
        statuses = session.scalars(select(Document.status).where(Document.id.in_(ids))).all()
    return len(statuses) == len(ids) and set(statuses) == {"pushed"}


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


# --------------------------------------------------------------------------- transient errors


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


def _ledger_statements(engine: Any) -> tuple[list[str], Any]:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words[:3] in (["INSERT", "INTO", "cloud_calls"], ["UPDATE", "cloud_calls", "SET"]):
            seen.append(words[0])
        elif words[:3] == ["DELETE", "FROM", "cloud_calls"]:
            seen.append("DELETE")

    return seen, on_execute


def test_a_batch_writes_its_push_rows_in_one_insert_and_completes_them_together(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import event

    warm = store_bill(world.sessions, "demo", demo_bill("BLEDGER-WARM"))
    assert world.push(warm) == "pushed"  # the token is cached: no token calls below
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BLEDGER-{i}")) for i in range(4)]
    no_token = ids[2]
    real_call, real_token = push_service._call, push_service.call_with_token
    sent: list[str] = []

    def call_or_not(rt: Any, **kw: Any) -> Any:
        if kw["document_id"] == no_token:  # as when no token can be had: nothing leaves
            return push_service._Answer(push_service.OutcomeClass.TRANSIENT, None, "no token",
                                        False)  # fmt: skip
        return real_call(rt, **kw)

    def recording(rt: Any, client: Any, call: Any) -> Any:
        result = real_token(rt, client, call)
        sent.append(result.request_id)
        return result

    monkeypatch.setattr(push_service, "_call", call_or_not)
    monkeypatch.setattr(push_service, "call_with_token", recording)
    engine = world.sessions.kw["bind"]
    seen, on_execute = _ledger_statements(engine)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        outcomes = push_documents(world.rt, ids)
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert [o.status for o in outcomes] == ["pushed", "pushed", "draft", "pushed"]
    # One INSERT at claim, one (executemany) UPDATE for the completions; the row of the
    # call that never left is deleted with them.
    assert seen == ["INSERT", "UPDATE", "DELETE"]
    rows = [r for r in push_ledger(world) if r.document_id != warm]
    assert sorted(r.document_id for r in rows) == [ids[0], ids[1], ids[3]]
    assert {(r.outcome, r.http_status) for r in rows} == {("accepted", 200)}
    assert all(r.latency_ms is not None and r.attempt == 1 for r in rows)
    # Each row carries the requestId its request was sent with.
    assert sorted(r.request_id for r in rows) == sorted(sent) and len(set(sent)) == 3

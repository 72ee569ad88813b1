"""``fapiao.push_batch``: many documents per task, each with the outcome a single push gives.

Simulator over real HTTP, real database, real Redis; messages run inline (``drain``) except
the last test, which runs a real Celery worker. Per-bill answers come from the simulator's
bill rules (``refuse``: ``-10007`` refused, ``9999`` transient, ``-10009`` duplicate).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from simulator.testing import CallbackRecorder, SimulatorHandle, make_bill
from store.claims import claim_for_push
from store.columns import utcnow
from store.db import unit_of_work
from store.lifecycle import transition
from store.models import CallbackInbox, CloudCall, Document, DocumentEvent, TenantState
from store.tenants import pause_tenant
from tests.integration.test_worker_world import DEMO_SELLER, SHOP_SELLER, World, make_world
from worker import queues
from worker.app import create_app
from worker.enqueue import CeleryEnqueuer, push_messages
from worker.runtime import build_runtime
from worker.services import push as push_service
from worker.services.push import push_documents
from worker.tasks import reset_runtime
from worker.testing import drain, fast_settings, store_bill, wait_until

pytest_plugins = ["tests.integration.test_worker_world"]

NO_DOUBLE_ISSUE: dict[str, list[object]] = {"live_twice": [], "over_issued": []}


def refuse(world: World, rules: dict[str, str]) -> None:
    world.sim.admin.put("/_sim/bill-rules", json={"refuse": rules}).raise_for_status()


def push_ledger(world: World) -> list[CloudCall]:
    with world.sessions() as session:
        return list(
            session.scalars(
                select(CloudCall).where(CloudCall.interface == "BILL.PUSH").order_by(CloudCall.id)
            )
        )


def demo_bill(bill_no: str, **kw: Any) -> dict[str, Any]:
    return make_bill(bill_no, DEMO_SELLER, auto_invoice=False, **kw)


@pytest.fixture
def batch_world(
    sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[World]:
    """Small batches (4) pushed 3 at a time, so chunking and overlap are visible."""
    yield from make_world(
        sim, callbacks, session_factory, database_url, redis_url, tmp_path,
        {"push": {"batch_size": 4, "batch_concurrency": 3}},
    )  # fmt: skip


# --------------------------------------------------------------------------- every outcome


def test_every_per_document_outcome_in_one_batch(world: World) -> None:
    sessions = world.sessions
    accepted = store_bill(sessions, "demo", demo_bill("BAT-OK"))
    refused = store_bill(sessions, "demo", demo_bill("BAT-REJ"))
    transient = store_bill(sessions, "demo", demo_bill("BAT-TRANS"))
    duplicate = store_bill(sessions, "demo", demo_bill("BAT-DUP"))
    broken = demo_bill("BAT-BAD")
    del broken["billDetail"]
    bad_payload = store_bill(sessions, "demo", broken, check=False)
    unknown_tenant = store_bill(sessions, "ghost", demo_bill("BAT-GHOST"))
    paused = store_bill(sessions, "shop", make_bill("BAT-PAUSED", SHOP_SELLER))
    already = store_bill(sessions, "demo", demo_bill("BAT-DONE"))
    assert world.push(already) == "pushed"
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


def test_unknown_outcomes_in_a_batch_are_settled_by_queries_never_pushed_again(
    declared_world: World,
) -> None:
    world = declared_world  # unknown_bill declared: an empty invoiceList proves presence
    world.sim.set_faults(drop_after_commit=1.0)
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BDROP-{i}")) for i in range(3)]
    assert [o.status for o in push_documents(world.rt, ids)] == ["in_doubt"] * 3
    world.sim.set_faults()
    outcomes = push_documents(world.rt, ids)  # a redelivered batch message: a no-op
    assert {o.status for o in outcomes} == {"skipped"}
    for doc_id in ids:
        world.run(queues.RESOLVE_IN_DOUBT, document_id=doc_id)
    assert [world.path(d) for d in ids] == [["draft", "pushing", "in_doubt", "pushed"]] * 3
    assert world.sim.stats()["calls"]["BILL.PUSH"] == {"dropped_after_commit": 3}
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_an_expired_token_mid_batch_is_refreshed_once(batch_world: World) -> None:
    world = batch_world
    first = store_bill(world.sessions, "demo", demo_bill("BTOK-0"))
    assert world.push(first) == "pushed"  # a token is cached
    assert world.sim.expire_tokens("demo") >= 1
    world.sim.set_faults(latency_ms=30)  # the batch's calls overlap
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BTOK-{i}")) for i in range(1, 7)]
    outcomes = push_documents(world.rt, ids)
    assert [o.status for o in outcomes] == ["pushed"] * 6
    assert world.sim.stats()["tokens"]["demo"] == {"app": 2, "access": 2}
    assert world.rt.tokens.refreshes == 2
    results = [c.outcome for c in push_ledger(world)]
    assert results.count("accepted") == 7
    assert 1 <= results.count("auth_expired") <= 3  # at most the first round, old token


def test_auth_refused_after_a_refresh_pauses_the_tenant_and_the_batch_waits(world: World) -> None:
    world.sim.set_faults(auth_fail=1.0)
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BAUTH-{i}")) for i in range(2)]
    outcomes = push_documents(world.rt, ids)
    assert [o.status for o in outcomes] == ["draft", "draft"]
    assert all(o.followups == [] for o in outcomes)  # no retry hammers the broken config
    with world.sessions() as session:
        state = session.get(TenantState, "demo")
        assert state is not None and state.paused
    assert all("paused" in (e.reason or "") for e in world.events(ids[0])[-1:])


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


def test_the_sweeper_sends_due_drafts_in_batches(batch_world: World) -> None:
    world = batch_world
    bill_nos = [f"BSWEEP-{i}" for i in range(9)]
    ids = [store_bill(world.sessions, "demo", demo_bill(no)) for no in bill_nos]
    assert world.run(queues.SWEEP).startswith("drafts=9")
    sent = world.enqueuer.sent
    assert [(f.task, len(f.kwargs.get("document_ids", [0]))) for f in sent] == [
        (queues.PUSH_BATCH, 4),
        (queues.PUSH_BATCH, 4),
        (queues.PUSH, 1),
    ]
    assert sent[0].kwargs == {
        "document_ids": ids[:4],
        "bill_nos": bill_nos[:4],
        "tenants": ["demo"] * 4,
    }
    assert sent[2].kwargs == {"document_id": ids[8], "bill_no": "BSWEEP-8", "tenant": "demo"}
    steps = drain(world.rt, world.enqueuer)
    assert [s.status for s in steps] == ["pushed=4", "pushed=4", "pushed"]
    assert {world.doc(d).status for d in ids} == {"pushed"}


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


def test_a_callback_that_overtook_the_push_answer_defers_the_first_poll(
    world: World,
) -> None:
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BOVERTAKE-{i}")) for i in range(2)]
    with unit_of_work(world.sessions) as session:
        # The receiver stored (and linked) a callback for the first one before the answer.
        session.add(
            CallbackInbox(
                dedupe_key="overtook-1", raw_body=b"{}", style="per_bill", state="received",
                document_id=ids[0], received_at=utcnow(),
            )
        )  # fmt: skip
    before = utcnow()
    outcomes = push_documents(world.rt, ids)
    assert [o.status for o in outcomes] == ["pushed", "pushed"]
    grace = world.rt.settings.callbacks.poll_grace_seconds
    first, second = (world.doc(i).next_poll_at for i in ids)
    assert first is not None and second is not None
    naive = before.replace(tzinfo=None)
    # Its reconcile will ask the cloud: the poll is only the safety net, after the grace.
    assert first.replace(tzinfo=None) >= naive + timedelta(seconds=grace - 1)
    assert second.replace(tzinfo=None) < naive + timedelta(seconds=grace - 1)

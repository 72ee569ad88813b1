"""Tokens and credentials against the cloud: expiry mid-run, refusals that pause a tenant,
the proactive refresh (``fapiao.refresh_tokens``), secrets kept out of the ledger.
Fixtures: tests/integration/conftest.py; World and helpers: tests/integration/worlds.py.
(The token cache's unit tests: tests/unit/test_worker_tokens.py.)
"""

from __future__ import annotations

from sqlalchemy import select

from simulator.testing import make_bill
from store.db import unit_of_work
from store.models import CloudCall, TenantState
from store.tenants import resume_tenant
from tests.integration.worlds import DEMO_SELLER, SHOP_SELLER, World, demo_bill, ledger, push_ledger
from worker import queues
from worker.services.push import push_documents
from worker.testing import drain, store_bill


def test_tokens_expiring_mid_run_cost_one_refresh_and_nothing_fails(world: World) -> None:
    def push_next(i: int) -> tuple[int, str]:
        # Stored one at a time: a push task gathers every due draft of its tenant.
        doc = store_bill(
            world.sessions, "demo", make_bill(f"TOK-{i}", DEMO_SELLER, auto_invoice=False)
        )
        return doc, world.push(doc)

    first = [push_next(i) for i in range(3)]
    assert [status for _, status in first] == ["pushed"] * 3
    assert world.sim.expire_tokens("demo") >= 1
    later = [push_next(i) for i in range(3, 6)]
    assert [status for _, status in later] == ["pushed"] * 3
    docs = [doc for doc, _ in first + later]
    assert world.sim.stats()["tokens"]["demo"] == {"app": 2, "access": 2}
    assert world.rt.tokens.refreshes == 2
    outcomes = [c.outcome for c in ledger(world, "BILL.PUSH")]
    assert outcomes.count("auth_expired") == 1
    assert outcomes.count("accepted") == 6
    assert {world.doc(d).status for d in docs} == {"pushed"}


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


def test_tokens_never_reach_the_ledger(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("MASK-1", DEMO_SELLER))
    world.push(doc_id)
    token = world.rt.tokens.peek("demo")
    assert token is not None
    spec = world.sim.spec("demo")
    with world.sessions() as session:
        rows = session.scalars(select(CloudCall)).all()
    assert rows
    for row in rows:
        text = f"{row.message} {row.error_code} {row.request_id}"
        assert token.value not in text
        assert spec["app_secret"] not in text


# --------------------------------------------------------------------------- proactive refresh


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

"""The credit quota (授信额度): a quota that runs out holds the rest of a batch without a single
failure, and the hold ends at the Asia/Shanghai day boundary, by an operator's resume, or is
recognised from an issuance refused with 授信额度不足.

Real database + Redis, the simulator over HTTP with a per-tenant quota (``PUT /_sim/quota``);
the worker's services run in process (``World``); both clocks are moved by the test (the
simulator's ``/_sim/clock`` offset and the runtime's ``clock``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from producers.testing import bridge_settings, build_test_components, run_cli
from schemas.cloud_contract import QUOTA_ISSUE_ERROR_MESSAGE
from simulator.testing import make_bill
from store.models import Document, TenantQuota
from store.queries import oldest_by_status
from store.quota import QUOTA_RECHECK, SHANGHAI
from store.states import QUOTA_EXHAUSTED, QUOTA_HELD, DocumentStatus
from tests.integration.worlds import DEMO_SELLER, World, WorldFactory
from worker import queues
from worker.testing import drain, store_bill

FAILED = ("failed", "invoice_failed", "rejected")


def _bill(bill_no: str, amount: str = "100.00", *, auto: bool = True) -> dict[str, object]:
    return make_bill(bill_no, DEMO_SELLER, auto_invoice=auto, amount=amount)  # 113.00 incl.


def _quota(world: World) -> TenantQuota:
    with world.sessions() as session:
        row = session.get(TenantQuota, ("demo", DEMO_SELLER))
        assert row is not None
        return row


def _settle_callbacks(world: World, seen: int, count: int) -> int:
    """Feed the next ``count`` callbacks the simulator sent to the bridge's reconcile."""
    received = world.callbacks.wait_for(seen + count)
    for callback in received[seen : seen + count]:
        assert world.reconcile(callback.body) == "processed"
    return seen + count


def _push_batch(world: World, ids: list[int]) -> None:
    world.run(queues.PUSH_BATCH, document_ids=ids)
    world.enqueuer.take()  # polls and the like: the callbacks tell in these tests


def _statuses(world: World, ids: list[int]) -> list[str]:
    return [world.doc(i).status for i in ids]


def _first_issued(world: World) -> int:
    """One bill issued and its callback applied: the bridge learns the quota (bizControl)."""
    first = store_bill(world.sessions, "demo", _bill("QH-0"))
    assert world.push(first) == "pushed"
    world.enqueuer.take()
    return _settle_callbacks(world, 0, 1)


def _next_shanghai_day(world: World) -> float:
    """Seconds from the worker's now to one minute past the next Asia/Shanghai midnight."""
    now = world.rt.clock()
    local = now.astimezone(SHANGHAI)
    midnight = datetime(local.year, local.month, local.day, tzinfo=SHANGHAI) + timedelta(days=1)
    return (midnight.astimezone(UTC) - now).total_seconds() + 60


def test_a_quota_that_runs_out_holds_the_rest_of_the_batch_until_the_day_turns(
    new_world: WorldFactory,
) -> None:
    world = new_world({"push": {"batch_size": 10, "batch_concurrency": 3}})
    world.sim.set_quota("demo", "400.00", "100000.00")
    seen = _first_issued(world)
    assert _quota(world).day_surplus == Decimal("287.00")  # 400 − 113

    ids = [store_bill(world.sessions, "demo", _bill(f"QH-{n}")) for n in range(1, 5)]
    _push_batch(world, ids)
    # 287 covers two bills of 113.00; the other two wait, as drafts, with the reason. Only the
    # two in flight stand in the way (287 would cover one more): looked at again soon.
    assert _statuses(world, ids) == ["pushed", "pushed", "draft", "draft"]
    for document in [world.doc(i) for i in ids[2:]]:
        assert document.last_error_code == QUOTA_HELD
        assert "授信额度" in (document.last_error_message or "")
        assert "Nothing failed" in (document.last_error_message or "")
        assert document.next_attempt_at is not None
        assert document.next_attempt_at <= world.rt.clock() + QUOTA_RECHECK
    assert _quota(world).held

    # The two pushed ones issue; their callbacks lower the surplus to 61.00 and release the
    # hold for a re-check, which holds the two again: still no room, still nothing failed —
    # now until the day turns.
    seen = _settle_callbacks(world, seen, 2)
    assert _quota(world).day_surplus == Decimal("61.00")
    world.run(queues.SWEEP)
    drain(world.rt, world.enqueuer, skip=lambda f: not f.task.startswith("fapiao.push"))
    assert _statuses(world, ids) == ["invoiced", "invoiced", "draft", "draft"]
    assert world.sim.stats()["invoices"].get("failed", 0) == 0
    today = world.rt.clock().astimezone(SHANGHAI).date()
    for document in [world.doc(i) for i in ids[2:]]:
        assert document.next_attempt_at is not None
        due = document.next_attempt_at.astimezone(SHANGHAI)
        assert (due.date() - today).days == 1 and (due.hour, due.minute) == (0, 0)

    # Nothing is due before the boundary: the sweeper does not pick the held drafts up.
    world.run(queues.SWEEP)
    assert not [f for f in world.enqueuer.take() if f.task.startswith("fapiao.push")]

    # The day turns (both clocks): the sweeper pushes them, the cloud issues them.
    offset = _next_shanghai_day(world)
    world.sim.set_clock_offset(offset)
    now = world.rt.clock() + timedelta(seconds=offset)
    world.rt.clock = lambda: now
    world.run(queues.SWEEP)
    drain(world.rt, world.enqueuer, skip=lambda f: not f.task.startswith("fapiao.push"))
    assert _statuses(world, ids)[2:] == ["pushed", "pushed"]
    _settle_callbacks(world, seen, 2)
    assert _statuses(world, ids) == ["invoiced"] * 4
    assert world.sim.stats()["invoices"].get("failed", 0) == 0
    assert all(world.doc(i).last_error_code is None for i in ids)


def test_an_operator_resume_releases_a_quota_hold(
    new_world: WorldFactory, database_url: str
) -> None:
    world = new_world()
    world.sim.set_quota("demo", "250.00", "100000.00")
    _first_issued(world)  # 137.00 left
    ids = [store_bill(world.sessions, "demo", _bill(f"QR-{n}", auto=False)) for n in (1, 2)]
    _push_batch(world, ids)
    assert _statuses(world, ids) == ["pushed", "draft"]

    components = build_test_components(
        bridge_settings(database_url),
        world.sessions,
        tenants=world.rt.tenants,
    )
    listed = json.loads(run_cli(components, "tenants", "list", "--json").output)
    quota = {t["name"]: t for t in listed}["demo"]["quota"]
    [seller] = quota["sellers"]
    assert quota["held"] is True and seller["held"] is True
    assert (seller["day_surplus"], seller["seller_tax_id"]) == ("137.00", DEMO_SELLER)
    assert "授信额度" in seller["hold_reason"]
    assert "HELD" in run_cli(components, "tenants", "list").output

    world.sim.set_quota("demo", "10000.00", "100000.00")  # Kingdee raised it; the operator:
    assert run_cli(components, "tenants", "resume", "demo").exit_code == 0
    assert world.doc(ids[1]).next_attempt_at <= world.rt.clock()  # type: ignore[operator]
    world.run(queues.SWEEP)
    drain(world.rt, world.enqueuer, skip=lambda f: not f.task.startswith("fapiao.push"))
    assert _statuses(world, ids) == ["pushed", "pushed"]
    after = json.loads(run_cli(components, "tenants", "list", "--json").output)
    assert {t["name"]: t for t in after}["demo"]["quota"]["held"] is False


def test_an_issuance_refused_for_quota_is_recognised_and_holds_the_seller(
    new_world: WorldFactory,
) -> None:
    """The bridge knew no quota (no callback yet): the cloud refuses with 授信额度不足."""
    world = new_world()
    world.sim.set_quota("demo", "100.00", "100000.00")  # less than one bill of 113.00
    doc_id = store_bill(world.sessions, "demo", _bill("QX-1"))
    assert world.push(doc_id) == "pushed"
    world.enqueuer.take()
    _settle_callbacks(world, 0, 1)
    document = world.doc(doc_id)
    assert document.status == "invoice_failed"
    assert document.last_error_code == QUOTA_EXHAUSTED
    assert QUOTA_ISSUE_ERROR_MESSAGE in (document.last_error_message or "")
    assert "held until" in (document.last_error_message or "")
    row = _quota(world)
    assert row.held and row.source == "issuance_error" and row.day_surplus == Decimal("0.00")

    later = store_bill(world.sessions, "demo", _bill("QX-2", "10.00"))
    assert world.push(later) == "held"
    assert world.doc(later).status == "draft"
    assert world.doc(later).last_error_code == QUOTA_HELD
    with world.sessions() as session:
        failed = session.scalars(select(Document.bill_no).where(Document.status.in_(FAILED)))
        assert list(failed) == ["QX-1"]  # the refused one only; the next one waits
        # … on purpose: no "stuck in draft" age for it (FapiaoQuotaHeld alerts instead).
        assert DocumentStatus.draft not in oldest_by_status(session)

    # What the reason says to do: once there is quota, issue it again in the cloud.
    world.sim.set_quota("demo", "250.00", "100000.00")
    world.sim.admin.post("/_sim/bills/QX-1/issue").raise_for_status()
    _settle_callbacks(world, 1, 1)
    document = world.doc(doc_id)
    assert (document.status, document.last_error_code) == ("invoiced", None)


def test_the_tenant_api_shows_the_quota_and_its_resume_releases_the_hold(
    new_world: WorldFactory, database_url: str
) -> None:
    from fastapi.testclient import TestClient

    from producers.http import create_app
    from producers.testing import auth_headers

    world = new_world()
    world.sim.set_quota("demo", "250.00", "100000.00")
    _first_issued(world)  # 137.00 left
    held = store_bill(world.sessions, "demo", _bill("QA-1", "200.00", auto=False))
    assert world.push(held) == "held"
    components = build_test_components(
        bridge_settings(database_url), world.sessions, tenants=world.rt.tenants
    )
    headers = auth_headers()
    with TestClient(create_app(components.settings, components=components)) as client:
        tenants = {t["name"]: t for t in client.get("/v1/tenants", headers=headers).json()}
        metrics = client.get("/metrics", headers=headers).text
        resumed = client.post(
            "/v1/tenants/demo/resume", headers=headers, json={"reason": "quota raised"}
        )
    quota = tenants["demo"]["quota"]
    assert tenants["shop"]["quota"] is None  # nothing reported for it
    [seller] = quota["sellers"]
    assert (quota["held"], seller["held"], seller["day_surplus"]) == (True, True, "137.00")
    assert seller["source"] == "callback" and seller["is_warning"] is False
    labels = f'{{seller="{DEMO_SELLER}",tenant="demo"}}'
    assert f"fapiao_quota_day_surplus_yuan{labels} 137.0" in metrics
    assert f"fapiao_quota_held{labels} 1.0" in metrics
    assert f"fapiao_quota_is_warning{labels} 0.0" in metrics
    assert resumed.status_code == 200 and resumed.json()["quota"]["held"] is False
    assert world.doc(held).next_attempt_at <= world.rt.clock()  # type: ignore[operator]

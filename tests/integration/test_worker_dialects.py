"""The bridge under every reading of the cloud: each cell is one scenario × one value of one
dialect switch that concerns it × the tenant DECLARING that value in ``[tenants.cloud]`` or
leaving it UNDECLARED (unknown).

Real database + Redis, the simulator over HTTP playing the dialect (``PUT /_sim/dialect``),
the worker's services called directly (no beat, no broker: ``drain`` runs what they send).
Each cell asserts:

- no double issue (the simulator's detector: no billNo live twice, nothing over-issued);
- the document ends in its TRUE state (the cloud's), or in a state whose reason an operator
  sees (``last_error_message`` / a paused tenant's reason) — never silently elsewhere.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schemas.cloud_contract import DIALECT_SWITCHES
from schemas.data_codec import AesGcmCodec
from schemas.kingdee import CallbackParseError, parse_callback_with
from simulator.testing import (
    CallbackRecorder,
    CloudSession,
    SimulatorHandle,
    make_bill,
    running_simulator,
    sim_tenant_specs,
)
from store.columns import utcnow
from store.db import unit_of_work
from store.lifecycle import transition
from store.models import CallbackInbox, TenantState
from store.states import ISSUE_OVERDUE
from tests.integration.worlds import DEMO_SELLER, SHOP_SELLER, World, WorldFactory, make_world
from worker import queues
from worker.testing import drain, store_bill

NO_DOUBLE_ISSUE: dict[str, list[object]] = {"live_twice": [], "over_issued": []}


# --------------------------------------------------------------------------- helpers


def live_bills(world: World, bill_no: str) -> list[dict[str, Any]]:
    return [b for b in world.sim.bills() if b["billNo"] == bill_no and b["live"]]


def issued(world: World, bill_no: str) -> bool:
    bills = live_bills(world, bill_no)
    return bool(bills) and all(b["invoices"] and b["issued"] == b["invoices"] for b in bills)


def wait_issued(world: World, bill_no: str) -> None:
    world.sim.wait_for(lambda: issued(world, bill_no))


def bill(bill_no: str, *, auto: bool, lines: int = 1) -> dict[str, Any]:
    return make_bill(bill_no, DEMO_SELLER, auto_invoice=auto, lines=lines)


def paused_reason(world: World, tenant: str = "demo") -> str | None:
    with world.sessions() as session:
        state = session.get(TenantState, tenant)
        return state.paused_reason if state is not None and state.paused else None


# --------------------------------------------------------------------------- scenarios
# Each returns (document id, the expected final status); the cell checks the rest.


def push_and_invoice(world: World) -> tuple[int, str]:
    doc_id = store_bill(world.sessions, "demo", bill("M-PUSH", auto=True, lines=3))
    assert world.push(doc_id) == "pushed"
    wait_issued(world, "M-PUSH")
    assert world.run(queues.POLL, document_id=doc_id) == "invoiced"
    assert len(world.invoices(doc_id)) == 2  # split at 2 lines: both read from the query
    return doc_id, "invoiced"


def in_doubt_never_arrived(world: World) -> tuple[int, str]:
    world.sim.set_faults(drop_before=1.0)  # closed before the cloud stored anything
    doc_id = store_bill(world.sessions, "demo", bill("M-NEVER", auto=False))
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    drain(world.rt, world.enqueuer, max_steps=30)
    assert len(live_bills(world, "M-NEVER")) == 1  # it did reach the cloud, once
    return doc_id, "pushed"


def in_doubt_arrived(world: World) -> tuple[int, str]:
    world.sim.set_faults(drop_after_commit=1.0)  # stored, then the answer was lost
    doc_id = store_bill(world.sessions, "demo", bill("M-ARRIVED", auto=False))
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    drain(world.rt, world.enqueuer, max_steps=30)
    assert len(live_bills(world, "M-ARRIVED")) == 1
    return doc_id, "pushed"


def in_doubt_arrived_and_issued(world: World) -> tuple[int, str]:
    world.sim.set_faults(push_5xx_after_commit=1.0)
    doc_id = store_bill(world.sessions, "demo", bill("M-ISSUED", auto=True))
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    wait_issued(world, "M-ISSUED")
    drain(world.rt, world.enqueuer, max_steps=30)
    return doc_id, "invoiced"


def withdraw_before_issue(world: World) -> tuple[int, str]:
    doc_id = store_bill(world.sessions, "demo", bill("M-WD1", auto=False))
    assert world.push(doc_id) == "pushed"
    world.apply(doc_id, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "withdrawn"
    assert live_bills(world, "M-WD1") == []
    return doc_id, "withdrawn"


def withdraw_after_issue(world: World) -> tuple[int, str]:
    doc_id = store_bill(world.sessions, "demo", bill("M-WD2", auto=True))
    assert world.push(doc_id) == "pushed"
    wait_issued(world, "M-WD2")
    world.apply(doc_id, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "invoiced"
    assert "不允许撤回" in (world.doc(doc_id).last_error_message or "")
    return doc_id, "invoiced"


def withdraw_never_had(world: World) -> tuple[int, str]:
    world.sim.set_faults(drop_before=1.0)
    doc_id = store_bill(world.sessions, "demo", bill("M-WD3", auto=False))
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    world.enqueuer.take()
    with unit_of_work(world.sessions) as session:  # an operator gave up, then withdrew
        transition(session, doc_id, "give_up", actor="test")
        transition(session, doc_id, "withdraw", actor="test")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "withdrawn"
    return doc_id, "withdrawn"


def token_expiry(world: World) -> tuple[int, str]:
    first = store_bill(world.sessions, "demo", bill("M-TOK1", auto=True))
    assert world.push(first) == "pushed"  # a token is cached
    world.sim.expire_tokens("demo")
    doc_id = store_bill(world.sessions, "demo", bill("M-TOK2", auto=False))
    assert world.push(doc_id) == "pushed"  # push: refreshed once, retried
    wait_issued(world, "M-TOK1")
    world.sim.expire_tokens("demo")
    assert world.run(queues.POLL, document_id=first) == "invoiced"  # query
    world.sim.expire_tokens("demo")
    world.apply(doc_id, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "withdrawn"  # withdraw
    assert paused_reason(world) is None
    assert world.rt.tokens.refreshes == 4  # the first token + one refresh per expiry
    return doc_id, "withdrawn"


def auth_refused(world: World) -> tuple[int, str]:
    world.sim.set_faults(auth_fail=1.0)  # every call refused, even with a fresh token
    doc_id = store_bill(world.sessions, "demo", bill("M-AUTH", auto=False))
    assert world.push(doc_id) == "draft"  # never a failed document
    reason = paused_reason(world)
    assert reason is not None and "demo" in reason
    world.sim.set_faults()
    return doc_id, "draft"


def reconcile_callback(world: World) -> tuple[int, str]:
    doc_id = store_bill(world.sessions, "demo", bill("M-CB", auto=True))
    assert world.push(doc_id) == "pushed"
    body = world.callbacks.wait_for(1)[0].body
    assert world.reconcile(body) == "processed"  # the callback, confirmed by a query
    return doc_id, "invoiced"


def pushed_bill_lost_by_the_cloud(world: World) -> tuple[int, str]:
    doc_id = store_bill(world.sessions, "demo", bill("M-LOST", auto=False))
    assert world.push(doc_id) == "pushed"
    with CloudSession(world.sim, "demo") as cloud:  # someone withdrew it in the console
        assert cloud.withdraw("M-LOST", seller=DEMO_SELLER)["success"] is not None
    assert live_bills(world, "M-LOST") == []
    assert world.run(queues.POLL, document_id=doc_id) == "pushed"
    reading = world.sim.dialect()["unknown_bill"]
    if reading == "empty_list":
        # Indistinguishable from "not issued yet": the stuck alert is what an operator sees.
        later = utcnow() + timedelta(hours=2)
        world.rt.clock = lambda: later
        assert world.run(queues.POLL, document_id=doc_id) == "pushed"
        return doc_id, "pushed (stuck alert)"
    assert "does not have it" in (world.doc(doc_id).last_error_message or "")
    return doc_id, "pushed (reason)"


def callback_reports_a_failure(world: World) -> tuple[int, str]:
    world.sim.set_faults(issue_fail=1.0)
    doc_id = store_bill(world.sessions, "demo", bill("M-FAIL", auto=True))
    assert world.push(doc_id) == "pushed"
    body = world.callbacks.wait_for(1)[0].body
    assert world.reconcile(body) == "processed"
    trusted = world.rt.tenants.tenants[0].declares("failed_in_query", "omitted")
    if world.sim.dialect()["failed_in_query"] == "omitted" and not trusted:
        # Only the unsigned callback tells: not applied (invariant 4); the stuck alert fires,
        # and once overdue the document itself carries the reason.
        later = utcnow() + timedelta(seconds=world.rt.settings.poll.issue_overdue_seconds + 60)
        world.rt.clock = lambda: later
        assert world.run(queues.POLL, document_id=doc_id) == "pushed"
        assert world.doc(doc_id).last_error_code == ISSUE_OVERDUE
        return doc_id, "pushed (alert, then overdue)"
    assert world.invoices(doc_id)[0].issue_error_message  # the cloud's reason, kept
    return doc_id, "invoice_failed"


def failure_with_its_callback_lost(world: World) -> tuple[int, str]:
    world.sim.set_faults(issue_fail=1.0, callback_drop=1.0)
    doc_id = store_bill(world.sessions, "demo", bill("M-FAIL-LOST", auto=True))
    assert world.push(doc_id) == "pushed"
    world.sim.wait_for(lambda: world.sim.bill("M-FAIL-LOST")["failed"])
    if world.sim.dialect()["failed_in_query"] == "listed":
        assert world.run(queues.POLL, document_id=doc_id) == "invoice_failed"
        return doc_id, "invoice_failed"
    # Under `omitted` every query reads "not issued yet", declared or not: only age can tell.
    assert world.run(queues.POLL, document_id=doc_id) == "pushed"
    assert world.doc(doc_id).last_error_code is None  # not overdue yet: no false alarm
    later = utcnow() + timedelta(seconds=world.rt.settings.poll.issue_overdue_seconds + 60)
    world.rt.clock = lambda: later
    assert world.run(queues.POLL, document_id=doc_id) == "pushed"
    document = world.doc(doc_id)
    assert document.last_error_code == ISSUE_OVERDUE
    assert "开票申请单" in (document.last_error_message or "")
    return doc_id, "pushed (overdue, with a reason)"


def cloud_returns_the_bill(world: World) -> tuple[int, str]:
    doc_id = store_bill(world.sessions, "demo", bill("M-RET", auto=False))
    assert world.push(doc_id) == "pushed"
    world.sim.admin.post("/_sim/bills/M-RET/return").raise_for_status()
    body = world.callbacks.wait_for(1)[0].body
    assert world.reconcile(body) == "processed"
    assert live_bills(world, "M-RET") == []
    if world.sim.dialect()["unknown_bill"] == "empty_list":
        # Unconfirmable from an unsigned callback: unchanged, the row says why (+ alert).
        with world.sessions() as session:
            row = session.scalars(select(CallbackInbox).order_by(CallbackInbox.id.desc())).first()
            assert row is not None and "not confirmed" in (row.error or "")
        return doc_id, "pushed (alert)"
    return doc_id, "returned"


def quota_runs_low(world: World) -> tuple[int, str]:
    """A quota the first bill nearly uses up (7.00 left: a warning, so every reading of
    biz_control reports it): the next bill waits as a draft with the reason; nothing fails."""
    world.sim.set_quota("demo", "120.00", "100000.00")
    first = store_bill(world.sessions, "demo", bill("M-QUOTA-1", auto=True))
    assert world.push(first) == "pushed"
    body = world.callbacks.wait_for(1)[0].body
    assert world.reconcile(body) == "processed"
    assert world.doc(first).status == "invoiced"
    doc_id = store_bill(world.sessions, "demo", bill("M-QUOTA-2", auto=True))
    assert world.push(doc_id) == "held"
    assert world.doc(doc_id).last_error_code == "quota_held"
    return doc_id, "draft (held for quota)"


def quota_not_reported(world: World) -> tuple[int, str]:
    """No quota in the cloud: a limit nobody reaches, or (when_warning) no bizControl at all.
    Knowing less, the bridge holds nothing and fails nothing."""
    # One at a time: a push fills its batch with every waiting draft of its tenant.
    ids = [store_bill(world.sessions, "demo", bill("M-NOQ-1", auto=True))]
    assert world.push(ids[0]) == "pushed"
    assert world.reconcile(world.callbacks.wait_for(1)[0].body) == "processed"
    ids.append(store_bill(world.sessions, "demo", bill("M-NOQ-2", auto=True)))
    assert world.push(ids[1]) == "pushed"
    assert world.reconcile(world.callbacks.wait_for(2)[1].body) == "processed"
    assert world.doc(ids[0]).status == "invoiced"
    return ids[1], "invoiced"


def _clerk(world: World, action: Callable[[], object]) -> bytes:
    """The callback a clerk's action in the cloud (void / red) sends."""
    count = len(world.callbacks.received)
    action()
    return world.callbacks.wait_for(count + 1)[count].body


def void_after_issue(world: World) -> tuple[int, str]:
    doc_id, _ = reconcile_callback(world)
    assert world.doc(doc_id).status == "invoiced"
    body = _clerk(world, lambda: world.sim.void("M-CB"))
    assert world.reconcile(body) == "processed"  # INVOICE.CANCEL, confirmed by a query
    assert [i.standing for i in world.invoices(doc_id)] == ["voided"]
    return doc_id, "reversed"


def red_in_two_steps(world: World) -> tuple[int, str]:
    doc_id, _ = reconcile_callback(world)
    body = _clerk(world, lambda: world.sim.red("M-CB", amount="30.00"))
    assert world.reconcile(body) == "processed"  # INVOICE.RED, confirmed by a query
    document = world.doc(doc_id)
    [invoice] = world.invoices(doc_id)
    # keeps_0 says originalInvoiceStatus 3 for a partial 红冲 too, status_2 invoiceStatus 2:
    # neither decides; what is left to reverse does.
    assert (document.status, invoice.standing) == ("invoiced", "partially_reversed")
    body = _clerk(world, lambda: world.sim.red("M-CB"))
    assert world.reconcile(body) == "processed"
    assert [i.standing for i in world.invoices(doc_id)] == ["reversed"]
    return doc_id, "reversed"


@dataclass(frozen=True)
class Scenario:
    run: Callable[[World], tuple[int, str]]
    switches: tuple[str, ...]


SCENARIOS: dict[str, Scenario] = {
    "push": Scenario(
        push_and_invoice,
        (
            "success_data",
            "status_field",
            "query_lines",
            "unknown_fields",
            "request_id",
            "duplicate_bill",
        ),
    ),
    "in_doubt_never_arrived": Scenario(
        in_doubt_never_arrived,
        ("unknown_bill", "duplicate_bill", "withdraw_refusal", "success_data"),
    ),
    "in_doubt_arrived": Scenario(
        in_doubt_arrived,
        ("unknown_bill", "duplicate_bill", "withdraw_refusal", "success_data", "status_field"),
    ),
    "in_doubt_issued": Scenario(in_doubt_arrived_and_issued, ("unknown_bill", "query_lines")),
    "withdraw_before_issue": Scenario(
        withdraw_before_issue, ("withdraw_refusal", "success_data", "status_field")
    ),
    "withdraw_after_issue": Scenario(
        withdraw_after_issue, ("withdraw_refusal", "success_data", "query_lines")
    ),
    "withdraw_never_had": Scenario(withdraw_never_had, ("unknown_bill", "withdraw_refusal")),
    "token_expiry": Scenario(token_expiry, ("expired_token",)),
    "auth_refused": Scenario(auth_refused, ("expired_token",)),
    "reconcile": Scenario(reconcile_callback, ("query_lines", "callback_data", "status_field")),
    "pushed_lost": Scenario(pushed_bill_lost_by_the_cloud, ("unknown_bill",)),
    "callback_failure": Scenario(callback_reports_a_failure, ("failed_in_query", "callback_data")),
    "failure_callback_lost": Scenario(failure_with_its_callback_lost, ("failed_in_query",)),
    "returned": Scenario(cloud_returns_the_bill, ("unknown_bill", "withdraw_refusal")),
    "quota_low": Scenario(quota_runs_low, ("biz_control",)),
    "quota_unknown": Scenario(quota_not_reported, ("biz_control",)),
    "void": Scenario(void_after_issue, ("cancel_item", "callback_data")),
    "red": Scenario(red_in_two_steps, ("partial_red", "query_lines")),
}

CELLS = [
    pytest.param(name, switch, value, declared, id=f"{name}-{switch}={value}-{declared}")
    for name, scenario in SCENARIOS.items()
    for switch in scenario.switches
    for value in DIALECT_SWITCHES[switch]
    for declared in ("declared", "undeclared")
]


@pytest.fixture
def dialect_world(
    request: pytest.FixtureRequest, sim: SimulatorHandle, new_world: WorldFactory
) -> World:
    _scenario, switch, value, declared = request.param
    sim.set_dialect(**{switch: value})
    return new_world(cloud={switch: value} if declared == "declared" else None)


@pytest.mark.parametrize(
    ("scenario", "dialect_world"),
    [pytest.param(p.values[0], p.values, id=p.id) for p in CELLS],
    indirect=["dialect_world"],
)
def test_the_bridge_is_right_under_every_reading(scenario: str, dialect_world: World) -> None:
    world = dialect_world
    doc_id, expected = SCENARIOS[scenario].run(world)
    document = world.doc(doc_id)
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE
    assert document.status == expected.split(" ")[0], (document.status, document.last_error_message)
    terminal = {"invoiced", "withdrawn", "rejected", "failed", "returned", "reversed"}
    if document.status not in terminal and expected == document.status:
        # A non-terminal true state: the cloud's own (waiting for a user, paused with a
        # reason); nothing is silently stuck in pushing / in_doubt / withdrawing.
        assert document.status in ("pushed", "draft", "invoice_failed")
        if document.status == "draft":  # paused, or held for credit quota: with the reason
            assert paused_reason(world) is not None or document.last_error_code == "quota_held"
        if document.status == "invoice_failed":
            assert all(i.issue_error_message for i in world.invoices(doc_id))


def test_the_matrix_covers_every_switch_the_worker_reads() -> None:
    covered = {s for scenario in SCENARIOS.values() for s in scenario.switches}
    # merge: the dialects-merge helper's part (one invoice for several bills).
    assert covered >= set(DIALECT_SWITCHES) - {"merge"}


# --------------------------------------------------------------------------- AES tenants


@pytest.fixture
def aes_world(
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[World]:
    """Both simulator tenants use the AES 加密策略, each with its own key."""
    specs = sim_tenant_specs()
    for spec in specs:
        spec["data_encryption"] = "aes"
        spec["aes_key"] = "aes-" + secrets.token_hex(8)
    with running_simulator(
        specs, issue_delay=0.05, callback_url=callbacks.url, max_lines_per_invoice=2, seed=5
    ) as handle:
        yield from make_world(handle, callbacks, session_factory, database_url, redis_url, tmp_path)


def test_an_aes_tenant_pushes_queries_withdraws_and_reads_callbacks(aes_world: World) -> None:
    world = aes_world
    world.sim.set_dialect(success_data="base64")  # withdraw results arrive encrypted too
    doc_id = store_bill(world.sessions, "demo", bill("AES-1", auto=True))
    assert world.push(doc_id) == "pushed"
    body = world.callbacks.wait_for(1)[0].body
    assert "AES-1" not in body.decode("utf-8")  # the callback's data is encrypted
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "invoiced"
    other = store_bill(world.sessions, "shop", make_bill("AES-2", SHOP_SELLER, auto_invoice=False))
    assert world.push(other) == "pushed"
    world.apply(other, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=other) == "withdrawn"
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_a_callback_no_aes_key_opens_is_refused_without_being_applied(aes_world: World) -> None:
    world = aes_world
    doc_id = store_bill(world.sessions, "demo", bill("AES-3", auto=True))
    assert world.push(doc_id) == "pushed"
    body = world.callbacks.wait_for(1)[0].json()
    body["data"] = AesGcmCodec("not-the-key").encode(b'[{"billNo": "AES-3"}]')
    with pytest.raises(CallbackParseError, match="cannot be decoded"):
        parse_callback_with(json.dumps(body).encode(), world.rt.tenants.callback_codecs())


# --------------------------------------------------------------------------- duplicate_bill


@pytest.mark.parametrize("declared", ["accepted", None])
def test_a_replay_after_giving_up_in_doubt_queries_before_pushing_again(
    sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    declared: str | None,
) -> None:
    """duplicate_bill=accepted: the cloud would take a second live bill with the same billNo.
    A replay of a document that gave up in doubt (its bill IS in the cloud) must not push
    blind."""
    sim.set_dialect(duplicate_bill="accepted")
    cloud = {"duplicate_bill": declared} if declared else None
    worlds = make_world(
        sim, callbacks, session_factory, database_url, redis_url, tmp_path, cloud=cloud
    )
    world = next(worlds)
    try:
        world.sim.set_faults(drop_after_commit=1.0)
        doc_id = store_bill(world.sessions, "demo", bill("M-REPLAY", auto=False))
        assert world.push(doc_id) == "in_doubt"
        world.enqueuer.take()
        world.sim.set_faults(api_5xx_before=1.0)  # nothing can be learnt …
        later = utcnow() + timedelta(hours=2)
        world.rt.clock = lambda: later
        assert world.run(queues.RESOLVE_IN_DOUBT, document_id=doc_id) == "failed"  # … gave up
        world.sim.set_faults()
        world.apply(doc_id, "replay")  # an operator replays it
        assert world.push(doc_id) == "in_doubt"  # held back: a query decides first
        assert "BILL.INVOICE.QUERY decides first" in (world.doc(doc_id).last_error_message or "")
        drain(world.rt, world.enqueuer, max_steps=30)
        assert world.doc(doc_id).status == "pushed"
        assert len(live_bills(world, "M-REPLAY")) == 1
        assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE
    finally:
        worlds.close()

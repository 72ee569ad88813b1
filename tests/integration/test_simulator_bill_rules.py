"""``/_sim/bill-rules``: the cloud refuses a named bill, or drops a named bill's callbacks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from schemas.kingdee import parse_callback
from simulator.testing import (
    CallbackRecorder,
    CloudSession,
    SimulatorHandle,
    make_bill,
    recording_callback_receiver,
    running_simulator,
)

SELLER = "91310000SIM0000001"  # tenant demo


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackRecorder]:
    with recording_callback_receiver() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def module_sim(receiver: CallbackRecorder) -> Iterator[SimulatorHandle]:
    with running_simulator(
        issue_delay=0.02, callback_url=receiver.url, callback_retry_schedule=(0.05,)
    ) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimulatorHandle, receiver: CallbackRecorder) -> SimulatorHandle:
    module_sim.reset()
    receiver.clear()
    return module_sim


def test_refuse_rule_refuses_a_valid_bill_with_the_contract_text(sim: SimulatorHandle) -> None:
    rules = sim.admin.put("/_sim/bill-rules", json={"refuse": {"R-1": "-10007"}})
    assert rules.json() == {"refuse": {"R-1": "-10007"}, "dropCallbacks": []}
    with CloudSession(sim, "demo") as demo:
        refused = demo.push(make_bill("R-1", SELLER, auto_invoice=False))
        accepted = demo.push(make_bill("R-2", SELLER, auto_invoice=False))
    assert refused["success"] is False
    assert refused["errorCode"] == "-10007"
    assert refused["message"] == "价税合计金额不对"
    assert accepted["success"] is True
    assert [b["billNo"] for b in sim.bills()] == ["R-2"]


def test_drop_rule_sends_no_callback_for_that_bill_only(
    sim: SimulatorHandle, receiver: CallbackRecorder
) -> None:
    sim.admin.put("/_sim/bill-rules", json={"dropCallbacks": ["D-1"]}).raise_for_status()
    with CloudSession(sim, "demo") as demo:
        demo.push(make_bill("D-1", SELLER, auto_invoice=True))
        demo.push(make_bill("D-2", SELLER, auto_invoice=True))
    sim.wait_for(lambda: all(b["state"] == "invoiced" for b in sim.bills()) and sim.bills())
    [received] = receiver.wait_for(1)
    assert [item.billNo for item in parse_callback(received.body).items] == ["D-2"]
    sim.wait_for(lambda: sim.stats()["callbacksInFlight"] == 0)
    assert [r.body for r in receiver.received] == [received.body]
    # The dropped bill is still issued: a query finds its invoice.
    assert sim.bill("D-1")["issued"] == 1


def test_patch_merges_put_replaces_reset_clears_and_bad_codes_are_refused(
    sim: SimulatorHandle,
) -> None:
    sim.admin.put("/_sim/bill-rules", json={"refuse": {"A": "-10007"}}).raise_for_status()
    merged = sim.admin.patch(
        "/_sim/bill-rules", json={"refuse": {"B": "-10006"}, "dropCallbacks": ["C"]}
    ).json()
    assert merged == {"refuse": {"A": "-10007", "B": "-10006"}, "dropCallbacks": ["C"]}
    removed = sim.admin.patch("/_sim/bill-rules", json={"refuse": {"A": None}}).json()
    assert removed["refuse"] == {"B": "-10006"}
    bad = sim.admin.patch("/_sim/bill-rules", json={"refuse": {"X": "-99"}})
    assert bad.status_code == 400
    assert "-99" in bad.json()["error"]
    assert sim.admin.get("/_sim/bill-rules").json()["refuse"] == {"B": "-10006"}
    replaced = sim.admin.put("/_sim/bill-rules", json={"dropCallbacks": ["Z"]}).json()
    assert replaced == {"refuse": {}, "dropCallbacks": ["Z"]}
    sim.reset()
    assert sim.admin.get("/_sim/bill-rules").json() == {"refuse": {}, "dropCallbacks": []}

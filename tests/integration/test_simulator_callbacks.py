"""Callbacks from the simulator to a real HTTP listener: both styles (5.1.03 per bill for
``3std1`` codes, 5.1.02 per invoice otherwise), BILL.RETURN, retries on non-ACK / non-200 /
timeout, per-code URL override, and the callback faults (docs/CLOUD-CONTRACT.md §9)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from schemas.kingdee import CALLBACK_ACK, parse_callback
from simulator.testing import (
    CallbackRecorder,
    CloudSession,
    SimulatorHandle,
    make_bill,
    recording_callback_receiver,
    running_simulator,
)

SELLER = "91310000SIM0000001"  # tenant demo, code 3std1TESTERP: per-bill callbacks
SHOP_SELLER = "91440300SIM0000003"  # tenant shop, code SHOPERP01: per-invoice callbacks


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackRecorder]:
    with recording_callback_receiver() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def module_sim(receiver: CallbackRecorder) -> Iterator[SimulatorHandle]:
    with running_simulator(
        issue_delay=0.02,
        callback_url=receiver.url,
        callback_retry_schedule=(0.05, 0.1, 0.2),
        callback_timeout=0.5,
    ) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimulatorHandle, receiver: CallbackRecorder) -> SimulatorHandle:
    module_sim.reset()
    receiver.clear()
    return module_sim


def _ack() -> bytes:
    return json.dumps(CALLBACK_ACK).encode()


@pytest.fixture
def demo(sim: SimulatorHandle) -> Iterator[CloudSession]:
    with CloudSession(sim, "demo") as session:
        yield session


@pytest.fixture
def shop(sim: SimulatorHandle) -> Iterator[CloudSession]:
    with CloudSession(sim, "shop") as session:
        yield session


def _settled(sim: SimulatorHandle) -> dict[str, Any]:
    """Statistics once no callback is in flight any more."""

    def quiet() -> dict[str, Any] | None:
        stats = sim.stats()
        return stats if stats["callbacksInFlight"] == 0 else None

    result: dict[str, Any] = sim.wait_for(quiet)
    return result


def test_per_bill_callback_for_3std1_codes(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    demo.push(make_bill("CB-BILL", SELLER, invoice_type="007", lines=10, auto_invoice=True))
    [received] = receiver.wait_for(1)
    callback = parse_callback(received.body)
    assert callback.style == "per_bill"
    assert callback.interfaceCode == "INVOICE.OPEN"
    assert callback.returnCode == "0"
    assert [item.billNo for item in callback.items] == ["CB-BILL", "CB-BILL"]
    assert all(item.is_issued for item in callback.items)
    total = sum((item.includeTaxAmount or Decimal(0) for item in callback.items), Decimal(0))
    assert total == Decimal("1130.00")
    assert callback.bizControl is not None
    assert callback.bizControl.isWarning is False
    assert received.path == "/callbacks/kingdee/test"
    stats = _settled(sim)
    assert stats["callbacks"]["acknowledged"] == 1
    history = [e["event"] for e in sim.bill("CB-BILL")["history"]]
    assert "callback_attempt" in history


def test_per_invoice_callbacks_otherwise(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    shop.push(make_bill("CB-INV", SHOP_SELLER, invoice_type="026", lines=9, auto_invoice=True))
    received = receiver.wait_for(2)
    callbacks = [parse_callback(r.body) for r in received]
    assert {c.style for c in callbacks} == {"per_invoice"}
    assert all(len(c.items) == 1 and c.bizControl is None for c in callbacks)
    assert sorted(len(c.items[0].lines) for c in callbacks) == [1, 8]
    assert len({c.items[0].orderNo for c in callbacks}) == 2
    assert _settled(sim)["callbacks"]["acknowledged"] == 2


def test_failed_issuance_is_called_back_with_9999(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    shop.push(make_bill("CB-FAIL", SHOP_SELLER, auto_invoice=False))
    sim.admin.post("/_sim/bills/CB-FAIL/fail", json={"message": "授信额度不足"})
    [received] = receiver.wait_for(1)
    callback = parse_callback(received.body)
    assert (callback.returnCode, callback.returnMsg) == ("9999", "授信额度不足")
    [item] = callback.items
    assert item.is_failed
    assert item.issueErrorMessage == "授信额度不足"


def test_return_upstream_sends_bill_return(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    demo.push(make_bill("CB-RET", SELLER, auto_invoice=False))
    sim.admin.post("/_sim/bills/CB-RET/return", json={"reason": "金额有误"})
    [received] = receiver.wait_for(1)
    callback = parse_callback(received.body)
    assert callback.style == "return"
    assert callback.interfaceCode == "BILL.RETURN"
    assert callback.returned is not None
    assert (callback.returned.billNo, callback.returned.sellerTaxpayerId) == ("CB-RET", SELLER)
    assert callback.returned.reason == "金额有误"


def test_non_ack_answers_are_retried_until_acknowledged(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    receiver.refuse_first(2)
    shop.push(make_bill("CB-RETRY", SHOP_SELLER, auto_invoice=True))
    received = receiver.wait_for(3)
    assert [r.body for r in received[1:]] == [received[0].body] * 2
    stats = _settled(sim)["callbacks"]
    assert (stats["sent"], stats["not_acknowledged"], stats["acknowledged"]) == (3, 2, 1)
    [delivery] = sim.admin.get("/_sim/callbacks", params={"billNo": "CB-RETRY"}).json()
    assert delivery["state"] == "acknowledged"
    assert [a["acknowledged"] for a in delivery["attempts"]] == [False, False, True]


def test_non_200_is_retried(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    receiver.answer_with(lambda index, body: (500, _ack()) if index == 0 else (200, _ack()))
    shop.push(make_bill("CB-500", SHOP_SELLER, auto_invoice=True))
    receiver.wait_for(2)
    _settled(sim)
    [delivery] = sim.admin.get("/_sim/callbacks", params={"billNo": "CB-500"}).json()
    assert [a["status"] for a in delivery["attempts"]] == [500, 200]


def test_a_slow_answer_times_out_and_is_retried(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    def slow_first(index: int, body: bytes) -> tuple[int, bytes]:
        if index == 0:
            time.sleep(1.0)  # callback_timeout is 0.5 s
        return 200, _ack()

    receiver.answer_with(slow_first)
    shop.push(make_bill("CB-SLOW", SHOP_SELLER, auto_invoice=True))
    receiver.wait_for(2)
    _settled(sim)
    [delivery] = sim.admin.get("/_sim/callbacks", params={"billNo": "CB-SLOW"}).json()
    assert delivery["attempts"][0]["error"] == "ReadTimeout"
    assert delivery["state"] == "acknowledged"


def test_gives_up_after_the_schedule(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    receiver.refuse_first(100)
    shop.push(make_bill("CB-GIVEUP", SHOP_SELLER, auto_invoice=True))
    receiver.wait_for(4)  # first attempt + 3 retries of the schedule
    stats = _settled(sim)["callbacks"]
    assert (stats["sent"], stats["failed"]) == (4, 1)
    assert "acknowledged" not in stats
    history = [e["event"] for e in sim.bill("CB-GIVEUP")["history"]]
    assert history.count("callback_attempt") == 4
    assert history[-1] == "callback_failed"


def test_callback_url_override_per_business_system_code(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    with recording_callback_receiver("/other") as other:
        sim.set_callback_url("SHOPERP01", other.url)
        shop.push(make_bill("CB-OVERRIDE", SHOP_SELLER, auto_invoice=True))
        [received] = other.wait_for(1)
        assert parse_callback(received.body).items[0].billNo == "CB-OVERRIDE"
        _settled(sim)
    assert receiver.received == []
    urls = sim.admin.get("/_sim/callback-urls").json()
    assert urls["byBusinessSystemCode"] == {"SHOPERP01": other.url}


def test_no_callback_url_means_no_callback() -> None:
    with running_simulator(issue_delay=0.01) as sim, CloudSession(sim, "shop") as shop:
        shop.push(make_bill("CB-NONE", SHOP_SELLER, auto_invoice=True))
        sim.wait_for(lambda: sim.bill("CB-NONE")["state"] == "invoiced")
        assert sim.stats()["callbacks"] == {"skipped": 1}


# ---------------------------------------------------------------------- callback faults


def test_duplicate_fault_delivers_twice(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_faults(callback_duplicate=1.0)
    shop.push(make_bill("CB-DUP", SHOP_SELLER, auto_invoice=True))
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert _settled(sim)["callbacks"]["duplicated"] == 1


def test_drop_fault_never_sends(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_faults(callback_drop=1.0)
    shop.push(make_bill("CB-DROP", SHOP_SELLER, auto_invoice=True))
    sim.wait_for(lambda: sim.stats()["callbacks"].get("dropped") == 1)
    [delivery] = sim.admin.get("/_sim/callbacks", params={"billNo": "CB-DROP"}).json()
    assert (delivery["state"], delivery["attempts"]) == ("dropped", [])
    assert receiver.received == []
    assert sim.bill("CB-DROP")["state"] == "invoiced"


def test_delay_fault_holds_the_callback_back(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_faults(callback_delay=1.0, callback_delay_s=0.5)
    before_push = time.monotonic()
    shop.push(make_bill("CB-DELAY", SHOP_SELLER, auto_invoice=True))
    sim.wait_for(lambda: sim.bill("CB-DELAY")["state"] == "invoiced")
    [received] = receiver.wait_for(1)
    # A lower bound only: issuance comes after the push, the callback 0.5 s after issuance.
    assert received.at - before_push >= 0.5


def test_reorder_fault_reverses_an_issuance_s_callbacks(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_faults(callback_reorder=1.0)
    shop.push(make_bill("CB-ORDER", SHOP_SELLER, invoice_type="007", lines=24, auto_invoice=True))
    received = receiver.wait_for(3)
    arrived = [parse_callback(r.body).items[0].orderNo for r in received]
    planned = [inv["orderNo"] for inv in sim.bill("CB-ORDER")["invoiceList"]]
    assert arrived == list(reversed(planned))
    assert "callbacks_reordered" in [e["event"] for e in sim.bill("CB-ORDER")["history"]]


def test_callback_can_arrive_before_the_push_answer(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_faults(callback_before_response=1.0)
    answer = demo.push(make_bill("CB-EARLY", SELLER, auto_invoice=True))
    receiver.mark("push answered")
    assert answer["success"] is True
    assert receiver.events == ["callback", "push answered"]
    assert parse_callback(receiver.received[0].body).items[0].is_issued


def test_quota_warning_fault_in_biz_control(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_faults(quota_warning=1.0)
    demo.push(make_bill("CB-QUOTA", SELLER, auto_invoice=True))
    [received] = receiver.wait_for(1)
    control = parse_callback(received.body).bizControl
    assert control is not None
    assert control.isWarning is True
    assert control.monthSurplusLimit == Decimal("1234.56")

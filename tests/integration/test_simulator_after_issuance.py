"""After issuance, over real HTTP: a clerk's 作废 and 红冲, red bills pushed through BILL.PUSH
(checked against their blue invoice's canRedAmount), the credit quota with bizControl and the
clock offset, and the admin ways to make cloud and bridge disagree (docs/CLOUD-CONTRACT.md §15).

Tenant ``demo`` (3std1…) calls back per bill (5.1.03), ``shop`` per invoice (5.1.02).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from schemas.cloud_contract import (
    INVOICE_STATUS_NORMAL,
    INVOICE_STATUS_PARTIAL_RED,
    INVOICE_STATUS_RED,
    INVOICE_STATUS_VOID,
    QUOTA_ISSUE_ERROR_MESSAGE,
    ErrorCode,
    gateway_error,
)
from schemas.kingdee import (
    GatewayResponse,
    InvoiceItem,
    ParsedCallback,
    parse_callback,
    query_results,
)
from schemas.money import dumps_exact
from simulator.testing import (
    CallbackRecorder,
    CloudSession,
    SimulatorHandle,
    make_bill,
    recording_callback_receiver,
    running_simulator,
)

SELLER = "91310000SIM0000001"  # tenant demo: per-bill callbacks
SHOP_SELLER = "91440300SIM0000003"  # tenant shop: per-invoice callbacks
RED_RULE = "红冲金额超过可红冲金额"  # the rule -10015 names


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackRecorder]:
    with recording_callback_receiver() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def module_sim(receiver: CallbackRecorder) -> Iterator[SimulatorHandle]:
    with running_simulator(
        issue_delay=0.02,
        callback_url=receiver.url,
        callback_retry_schedule=(0.05,),
        callback_timeout=1.0,
    ) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimulatorHandle, receiver: CallbackRecorder) -> SimulatorHandle:
    module_sim.reset()
    receiver.clear()
    return module_sim


@pytest.fixture
def demo(sim: SimulatorHandle) -> Iterator[CloudSession]:
    with CloudSession(sim, "demo") as session:
        yield session


@pytest.fixture
def shop(sim: SimulatorHandle) -> Iterator[CloudSession]:
    with CloudSession(sim, "shop") as session:
        yield session


def _invoices(session: CloudSession, seller: str, bill_no: str) -> list[InvoiceItem]:
    [bill] = query_results(GatewayResponse.model_validate(session.query(seller, bill_no)))
    return bill.invoiceList


def _issued(
    sim: SimulatorHandle,
    session: CloudSession,
    receiver: CallbackRecorder,
    bill_no: str,
    seller: str = SELLER,
    **options: Any,
) -> InvoiceItem:
    """Push ``bill_no`` (100.00 + 13 % by default), issue it, wait for its OPEN callback."""
    before = len(receiver.received)
    assert session.push(make_bill(bill_no, seller, auto_invoice=False, **options))["success"]
    sim.admin.post(f"/_sim/bills/{bill_no}/issue", json={"wait": True}).raise_for_status()
    receiver.wait_for(before + 1)
    [invoice] = _invoices(session, seller, bill_no)
    assert invoice.is_issued
    return invoice


def _callbacks(receiver: CallbackRecorder, count: int) -> list[ParsedCallback]:
    return [parse_callback(r.body) for r in receiver.wait_for(count)]


def _red_bill(bill_no: str, number: str, amount: str = "-100.00", **header: Any) -> dict[str, Any]:
    return make_bill(
        bill_no,
        SELLER,
        amount=amount,
        auto_invoice=False,
        invoiceProperty="1",
        originalInvoiceNumber=number,
        **header,
    )


def _conflict(call: Any) -> str:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        call()
    assert caught.value.response.status_code == 409
    return str(caught.value.response.json()["error"])


NO_DOUBLE_ISSUE: dict[str, list[Any]] = {"live_twice": [], "over_issued": []}

# ---------------------------------------------------------------------- 作废


def test_void_calls_back_cancel_and_the_query_shows_status_6(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    blue = _issued(sim, demo, receiver, "V-1")
    sim.void("V-1", reason="开错了")
    opened, cancelled = _callbacks(receiver, 2)
    assert opened.interfaceCode == "INVOICE.OPEN"
    assert cancelled.interfaceCode == "INVOICE.CANCEL" and cancelled.style == "per_bill"
    assert cancelled.returnCode == "0"
    [item] = cancelled.items
    # cancel_item=own_fields: the voided invoice itself, and original* naming it.
    assert (item.billNo, item.invoiceNum, item.invoiceStatus) == ("V-1", blue.invoiceNum, "6")
    assert (item.originalInvoiceNumber, item.originalInvoiceStatus) == (blue.invoiceNum, "6")
    assert item.abolishReason == "开错了"
    [after] = _invoices(demo, SELLER, "V-1")
    assert after.invoiceStatus == INVOICE_STATUS_VOID
    assert (after.canRedAmount, after.canRedTaxAmount) == (Decimal("0.00"), Decimal("0.00"))
    assert "already" in _conflict(lambda: sim.void("V-1", blue.invoiceNum))
    assert "no invoice left" in _conflict(lambda: sim.void("V-1"))
    assert "no issued invoice" in _conflict(lambda: sim.void("V-1", "00000000"))
    assert sim.stats()["invoices"]["voided"] == 1
    assert sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_void_of_one_invoice_per_invoice_callbacks(
    sim: SimulatorHandle, shop: CloudSession, receiver: CallbackRecorder
) -> None:
    shop.push(make_bill("V-SPLIT", SHOP_SELLER, invoice_type="026", lines=9, auto_invoice=False))
    sim.admin.post("/_sim/bills/V-SPLIT/issue").raise_for_status()
    receiver.wait_for(2)
    first, second = _invoices(shop, SHOP_SELLER, "V-SPLIT")
    assert first.invoiceNum is not None
    sim.void("V-SPLIT", first.invoiceNum)
    [cancel] = _callbacks(receiver, 3)[2:]
    assert (cancel.interfaceCode, cancel.style) == ("INVOICE.CANCEL", "per_invoice")
    assert cancel.items[0].invoiceNum == first.invoiceNum
    statuses = {i.invoiceNum: i.invoiceStatus for i in _invoices(shop, SHOP_SELLER, "V-SPLIT")}
    assert statuses == {first.invoiceNum: "6", second.invoiceNum: "0"}


def test_cancel_item_original_only_dialect(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_dialect(cancel_item="original_only")
    blue = _issued(sim, demo, receiver, "V-ORIG")
    sim.void("V-ORIG")
    cancel = _callbacks(receiver, 2)[1]
    [item] = cancel.items
    assert cancel.returnCode == "0"  # no invoiceNum, yet not a failure
    assert not item.invoiceNum and not item.orderNo
    assert (item.billNo, item.originalInvoiceNumber) == ("V-ORIG", blue.invoiceNum)
    assert item.originalInvoiceStatus == "6"


def test_void_refused_for_a_bill_not_issued_and_for_a_reversed_invoice(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    demo.push(make_bill("V-NONE", SELLER, auto_invoice=False))
    assert "no invoice left to void" in _conflict(lambda: sim.void("V-NONE"))
    blue = _issued(sim, demo, receiver, "V-RED")
    sim.red("V-RED", amount="10.00")
    assert "reversed" in _conflict(lambda: sim.void("V-RED", blue.invoiceNum))


# ---------------------------------------------------------------------- a clerk's 红冲


def test_full_red_calls_back_red_with_the_red_invoice_and_status_3(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    blue = _issued(sim, demo, receiver, "R-FULL")
    detail = sim.red("R-FULL", redReason="1")
    assert "operator_red" in [e["event"] for e in detail["history"]]
    red_cb = _callbacks(receiver, 2)[1]
    assert (red_cb.interfaceCode, red_cb.returnCode) == ("INVOICE.RED", "0")
    [item] = red_cb.items
    assert item.billNo == "R-FULL"  # for the original's bill
    assert item.invoiceProperty == 1 and item.is_issued and item.invoiceNum != blue.invoiceNum
    assert (item.totalAmount, item.totalTaxAmount) == (Decimal("-100.00"), Decimal("-13.00"))
    assert item.originalInvoiceNumber == blue.invoiceNum
    assert item.originalInvoiceStatus == INVOICE_STATUS_RED
    [after] = _invoices(demo, SELLER, "R-FULL")
    assert after.invoiceStatus == INVOICE_STATUS_RED
    assert (after.canRedAmount, after.canRedTaxAmount) == (Decimal("0.00"), Decimal("0.00"))
    # The clerk's 红冲单 lives in the cloud, belongs to no 业务系统: no INVOICE.OPEN for it.
    [cloud_red] = sim.bills(billNo="R-FULL-HC1")
    assert (cloud_red["source"], cloud_red["state"]) == ("cloud_red", "invoiced")
    assert len(receiver.received) == 2
    assert RED_RULE in _conflict(lambda: sim.red("R-FULL", blue.invoiceNum))
    stats = sim.stats()
    assert stats["invoices"] == {"issued": 1, "red": 1}
    assert stats["doubleIssue"] == NO_DOUBLE_ISSUE


def test_a_clerk_reverses_a_special_invoice_without_red_info(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    """redInfoBillNo binds pushed red 专票 only; the clerk's 红字确认单 is made in the cloud."""
    _issued(sim, demo, receiver, "R-SPECIAL", invoice_type="028", lines=2, tax_rate="0.06")
    bad = sim.admin.post("/_sim/bills/R-SPECIAL/red", json={"redReason": "9"})
    assert bad.status_code == 400 and "redReason" in bad.json()["error"]
    sim.red("R-SPECIAL", redReason="4")
    [red] = _callbacks(receiver, 2)[1].items
    assert (red.invoiceType, red.totalAmount) == ("028", Decimal("-200.00"))
    assert red.invoiceCode and red.originalInvoiceCode  # 税控 invoices: code + number


@pytest.mark.parametrize(
    ("reading", "partial_status"),
    [("keeps_0", INVOICE_STATUS_NORMAL), ("status_2", INVOICE_STATUS_PARTIAL_RED)],
)
def test_partial_red_books_can_red_amount(
    sim: SimulatorHandle,
    demo: CloudSession,
    receiver: CallbackRecorder,
    reading: str,
    partial_status: str,
) -> None:
    sim.set_dialect(partial_red=reading)
    _issued(sim, demo, receiver, "R-PART")
    sim.red("R-PART", amount="30.00")
    [after] = _invoices(demo, SELLER, "R-PART")
    assert (after.canRedAmount, after.canRedTaxAmount) == (Decimal("70.00"), Decimal("9.10"))
    assert after.invoiceStatus == partial_status
    red_cb = _callbacks(receiver, 2)[1]
    assert red_cb.items[0].totalAmount == Decimal("-30.00")
    expected = INVOICE_STATUS_RED if reading == "keeps_0" else INVOICE_STATUS_PARTIAL_RED
    assert red_cb.items[0].originalInvoiceStatus == expected
    error = _conflict(lambda: sim.red("R-PART", amount="70.01"))
    assert RED_RULE in error and "70.00" in error
    sim.red("R-PART")  # the rest
    [done] = _invoices(demo, SELLER, "R-PART")
    assert (done.invoiceStatus, done.canRedAmount) == (INVOICE_STATUS_RED, Decimal("0.00"))
    assert _callbacks(receiver, 3)[2].items[0].totalAmount == Decimal("-70.00")
    assert sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


# ---------------------------------------------------------------------- red bills via BILL.PUSH


def test_pushed_red_bill_refusals_name_the_rule(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    blue = _issued(sim, demo, receiver, "P-BLUE")
    number = str(blue.invoiceNum)
    unknown = demo.push(_red_bill("P-RED-0", "25449999999999999999"))
    assert (unknown["success"], unknown["errorCode"]) == (False, ErrorCode.ORIGINAL_UNKNOWN)
    assert "25449999999999999999" in unknown["message"]
    over = demo.push(_red_bill("P-RED-1", number, amount="-100.01"))
    assert (over["errorCode"], over["message"]) == (
        ErrorCode.RED_OVER_LIMIT,
        gateway_error(ErrorCode.RED_OVER_LIMIT).message(available=Decimal("100.00")),
    )
    assert RED_RULE in over["message"]
    # 专票 (08xdp) needs redInfoBillNo.
    special = _issued(sim, demo, receiver, "P-BLUE-S", invoice_type="08xdp")
    no_info = demo.push(
        make_bill(
            "P-RED-S",
            SELLER,
            invoice_type="08xdp",
            amount="-100.00",
            invoiceProperty="1",
            originalInvoiceNumber=special.invoiceNum,
        )
    )
    assert (no_info["errorCode"], no_info["message"]) == ("-10004", "redInfoBillNo不能为空")
    sim.void("P-BLUE")
    voided = demo.push(_red_bill("P-RED-2", number))
    assert voided["errorCode"] == ErrorCode.ORIGINAL_VOIDED
    assert sim.bills(billNo="P-RED-2") == []


def test_pushed_red_bill_is_issued_and_calls_back_open_then_red(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    blue = _issued(sim, demo, receiver, "P-ORIG")
    red = _red_bill("P-NEG", str(blue.invoiceNum), amount="-40.00", redReason="2")
    assert demo.push(red)["success"] is True
    sim.admin.post("/_sim/bills/P-NEG/issue").raise_for_status()
    opened, reversed_ = _callbacks(receiver, 3)[1:]
    assert (opened.interfaceCode, opened.items[0].billNo) == ("INVOICE.OPEN", "P-NEG")
    assert opened.items[0].invoiceProperty == 1
    assert opened.items[0].includeTaxAmount == Decimal("-45.20")
    assert opened.bizControl is not None  # per-bill INVOICE.OPEN, red or blue
    assert (reversed_.interfaceCode, reversed_.items[0].billNo) == ("INVOICE.RED", "P-ORIG")
    assert reversed_.items[0].invoiceNum == opened.items[0].invoiceNum
    [original] = _invoices(demo, SELLER, "P-ORIG")
    assert (original.canRedAmount, original.invoiceStatus) == (Decimal("60.00"), "0")
    [red_item] = _invoices(demo, SELLER, "P-NEG")
    assert red_item.originalInvoiceNumber == blue.invoiceNum
    assert red_item.originalIssueTime == str(blue.invoiceDate).replace("-", "")
    assert sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_red_bills_are_checked_again_at_issuance(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    """Two red bills each within canRedAmount at push, together over it: the second fails."""
    blue = _issued(sim, demo, receiver, "P-TWO")
    for bill_no in ("P-NEG-A", "P-NEG-B"):
        assert demo.push(_red_bill(bill_no, str(blue.invoiceNum), amount="-60.00"))["success"]
    sim.admin.post("/_sim/bills/P-NEG-A/issue").raise_for_status()
    sim.admin.post("/_sim/bills/P-NEG-B/issue").raise_for_status()
    assert sim.bill("P-NEG-B")["state"] == "failed"
    [failed] = _invoices(demo, SELLER, "P-NEG-B")
    assert failed.issueErrorMessage is not None and RED_RULE in failed.issueErrorMessage
    [original] = _invoices(demo, SELLER, "P-TWO")
    assert original.canRedAmount == Decimal("40.00")


# ---------------------------------------------------------------------- quota


def test_quota_exhaustion_fails_issuance_then_resets_at_the_day_boundary(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_quota("demo", "250.00", "1000.00")  # warning below 25.00 / 100.00
    _issued(sim, demo, receiver, "Q-1")  # 113.00
    first = _callbacks(receiver, 1)[0].bizControl
    assert first is not None
    assert (first.daySurplusLimit, first.monthSurplusLimit) == (
        Decimal("137.00"),
        Decimal("887.00"),
    )
    assert first.isWarning is False
    _issued(sim, demo, receiver, "Q-2")
    second = _callbacks(receiver, 2)[1].bizControl
    assert second is not None
    assert (second.daySurplusLimit, second.isWarning) == (Decimal("24.00"), True)
    demo.push(make_bill("Q-3", SELLER, auto_invoice=False))
    sim.admin.post("/_sim/bills/Q-3/issue").raise_for_status()
    refused = _callbacks(receiver, 3)[2]
    assert refused.returnCode == "9999"
    assert refused.items[0].issueErrorMessage == QUOTA_ISSUE_ERROR_MESSAGE
    assert sim.bill("Q-3")["state"] == "failed"
    quota = sim.quota()["demo"]
    assert (quota["dayUsed"], quota["daySurplusLimit"]) == (Decimal("226.00"), Decimal("24.00"))
    sim.set_clock_offset(86400)  # the next Asia/Shanghai day
    after = sim.quota()["demo"]
    assert after["date"] > quota["date"]
    assert after["dayUsed"] == Decimal("0.00")
    same_month = after["monthOf"] == quota["monthOf"]
    assert after["monthUsed"] == (Decimal("226.00") if same_month else Decimal("0.00"))
    sim.admin.post("/_sim/bills/Q-3/issue").raise_for_status()
    assert sim.bill("Q-3")["state"] == "invoiced"
    reissued = _callbacks(receiver, 4)[3].bizControl
    assert reissued is not None and reissued.daySurplusLimit == Decimal("137.00")


def test_month_quota_refuses_and_reds_do_not_consume(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_quota("demo", "1000.00", "120.00")
    blue = _issued(sim, demo, receiver, "QM-1")
    demo.push(_red_bill("QM-NEG", str(blue.invoiceNum)))
    sim.admin.post("/_sim/bills/QM-NEG/issue").raise_for_status()
    assert sim.bill("QM-NEG")["state"] == "invoiced"
    assert sim.quota()["demo"]["monthUsed"] == Decimal("113.00")  # the red one used nothing
    demo.push(make_bill("QM-2", SELLER, amount="5.00", auto_invoice=False))  # 5.65 of 7.00 left
    sim.admin.post("/_sim/bills/QM-2/issue").raise_for_status()
    assert sim.bill("QM-2")["state"] == "invoiced"
    demo.push(make_bill("QM-3", SELLER, amount="5.00", auto_invoice=False))  # 5.65 > 1.35 left
    sim.admin.post("/_sim/bills/QM-3/issue").raise_for_status()
    assert sim.bill("QM-3")["state"] == "failed"


def test_quota_admin_routes(sim: SimulatorHandle) -> None:
    assert sim.quota() == {}
    answer = sim.set_quota("shop", "10", "20", warn_ratio="0.5")
    assert (answer["shop"]["day"], answer["shop"]["warn_ratio"]) == (
        Decimal("10.00"),
        Decimal("0.5"),
    )
    bad = sim.admin.put("/_sim/quota", json={"shop": {"day": "-1", "month": "2"}})
    assert bad.status_code == 400 and "day" in bad.json()["error"]
    assert sim.admin.put("/_sim/quota", json={"nobody": None}).status_code == 404
    assert sim.set_quota("shop", None) == {}
    assert sim.admin.put("/_sim/clock", json={"offset_seconds": "x"}).status_code == 400
    assert sim.set_clock_offset(3600)["offset_seconds"] == Decimal("3600.0")
    sim.reset()
    assert sim.set_clock_offset(0)["offset_seconds"] == Decimal("0.0")
    assert sim.quota() == {}


def test_quota_given_at_start(receiver: CallbackRecorder) -> None:
    with running_simulator(quotas={"demo": ("100.00", "200.00")}) as sim:
        assert sim.quota()["demo"]["monthSurplusLimit"] == Decimal("200.00")
        sim.set_quota("demo", None)
        sim.reset()
        assert sim.quota()["demo"]["day"] == Decimal("100.00")


# ---------------------------------------------------------------------- bizControl dialects


@pytest.mark.parametrize(
    ("reading", "warning", "carried"),
    [
        ("per_bill", True, False),
        ("every_open", False, True),
        ("when_warning", False, False),
        ("when_warning", True, True),
    ],
)
def test_biz_control_on_per_invoice_callbacks(
    sim: SimulatorHandle,
    shop: CloudSession,
    receiver: CallbackRecorder,
    reading: str,
    warning: bool,
    carried: bool,
) -> None:
    sim.set_dialect(biz_control=reading)
    # 113.00 issued: 7.00 of 120.00 left is below 10 % (warning), 9887.00 of 10000.00 is not.
    sim.set_quota("shop", "120.00" if warning else "10000.00", "10000.00")
    _issued(sim, shop, receiver, "BIZ-1", SHOP_SELLER)
    [callback] = _callbacks(receiver, 1)
    assert callback.style == "per_invoice"
    assert (callback.bizControl is not None) == carried
    if carried:
        assert callback.bizControl is not None and callback.bizControl.isWarning is warning


# ---------------------------------------------------------------------- cloud vs bridge


def test_withdraw_behind_the_bridges_back(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    demo.push(make_bill("W-1", SELLER, auto_invoice=False))
    detail = sim.withdraw_behind("W-1")
    assert detail["state"] == "withdrawn" and detail["callbacksStarted"] == []
    assert "withdrawn_behind" in [e["event"] for e in detail["history"]]
    answer = demo.query(SELLER, "W-1")
    assert (answer["success"], answer["errorCode"]) == (False, "-10011")
    assert receiver.received == []
    _issued(sim, demo, receiver, "W-2")
    assert "only a bill with nothing issued" in _conflict(lambda: sim.withdraw_behind("W-2"))


def test_planted_bill_is_an_orphan_the_cloud_issues_and_calls_back(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    planted = sim.plant_bill(make_bill("ORPHAN-1", SELLER, auto_invoice=True))
    assert (planted["source"], planted["tenant"]) == ("planted", "demo")
    [callback] = _callbacks(receiver, 1)
    assert callback.items[0].billNo == "ORPHAN-1" and callback.items[0].is_issued
    [invoice] = _invoices(demo, SELLER, "ORPHAN-1")
    assert invoice.is_issued
    assert "live already" in _conflict(lambda: sim.plant_bill(make_bill("ORPHAN-1", SELLER)))
    bad = sim.admin.post("/_sim/bills", json={"bill": {"billNo": "X"}})
    assert bad.status_code == 400 and bad.json()["refusal"]["errorCode"] == "-10004"
    stranger = make_bill("ORPHAN-2", "91000000000000000X")
    assert sim.admin.post("/_sim/bills", content=dumps_exact({"bill": stranger})).status_code == 404
    alien = sim.admin.post("/_sim/bills", content=dumps_exact({"bill": stranger, "tenant": "demo"}))
    assert alien.status_code == 400
    assert alien.json()["refusal"]["errorCode"] == ErrorCode.SELLER_UNKNOWN

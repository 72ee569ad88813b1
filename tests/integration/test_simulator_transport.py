"""Transport-level faults of the simulator over real HTTP: 5xx before processing, 5xx or a
dropped connection AFTER a committed push (the unknown outcome), latency, and seeded
reproducibility (simulator.faults)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from schemas.cloud_contract import OutcomeClass, classify_http_status
from simulator.testing import CloudSession, SimulatorHandle, make_bill, running_simulator

SELLER = "91310000SIM0000001"


@pytest.fixture(scope="module")
def module_sim() -> Iterator[SimulatorHandle]:
    with running_simulator(issue_delay=60.0) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimulatorHandle) -> SimulatorHandle:
    module_sim.reset()
    return module_sim


@pytest.fixture
def demo(sim: SimulatorHandle) -> Iterator[CloudSession]:
    with CloudSession(sim, "demo") as session:
        session.login()
        yield session


def test_push_5xx_before_processing_stores_nothing(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    sim.set_faults(push_5xx_before=1.0)
    response = demo.gateway("BILL.PUSH", [make_bill("T-502", SELLER)])
    assert response.status_code == 502
    assert classify_http_status(response.status_code) is OutcomeClass.UNKNOWN_OUTCOME
    assert sim.bills(billNo="T-502") == []
    # Only pushes: a query still answers.
    assert demo.query(SELLER, "T-502")["message"] == "单据不存在"
    assert sim.stats()["calls"]["BILL.PUSH"] == {"http_502_before": 1}


def test_api_5xx_before_hits_every_gateway_call(sim: SimulatorHandle, demo: CloudSession) -> None:
    sim.set_faults(api_5xx_before=1.0)
    query = demo.gateway("BILL.INVOICE.QUERY", {"sellerTaxpayerId": SELLER, "serialNo": "X"})
    assert query.status_code == 503
    push = demo.gateway("BILL.PUSH", [make_bill("T-503", SELLER)])
    assert push.status_code == 503
    sim.set_faults()
    assert sim.bills(billNo="T-503") == []


def test_token_5xx_hits_token_calls(sim: SimulatorHandle, demo: CloudSession) -> None:
    sim.set_faults(token_5xx=1.0)
    assert demo.app_token_response().status_code == 503
    assert sim.stats()["calls"]["getAppToken"] == {"success": 1, "http_503": 1}  # + login


def test_dropped_before_processing_is_a_transport_error_and_stores_nothing(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    sim.set_faults(drop_before=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        demo.gateway("BILL.PUSH", [make_bill("T-DROP-0", SELLER)])
    assert sim.bills(billNo="T-DROP-0") == []
    assert sim.stats()["calls"]["BILL.PUSH"] == {"dropped_before": 1}


def test_5xx_after_commit_leaves_the_bill_in_the_cloud(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    sim.set_faults(push_5xx_after_commit=1.0)
    bill = make_bill("T-504", SELLER, auto_invoice=False)
    response = demo.gateway("BILL.PUSH", [bill])
    assert response.status_code == 504
    assert classify_http_status(response.status_code) is OutcomeClass.UNKNOWN_OUTCOME
    sim.set_faults()
    # The outcome was unknown to the client, but the cloud has the bill: query says so and a
    # blind re-push is refused as a duplicate.
    assert sim.bill("T-504")["state"] == "accepted"
    assert demo.query(SELLER, "T-504")["success"] is True
    assert demo.push(bill)["errorCode"] == "-10009"


def test_dropped_connection_after_commit_is_the_unknown_outcome(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    sim.set_faults(drop_after_commit=1.0)
    bill = make_bill("T-DROP-1", SELLER, auto_invoice=False)
    with pytest.raises(httpx.RemoteProtocolError):
        demo.gateway("BILL.PUSH", [bill])
    sim.set_faults()
    assert sim.bill("T-DROP-1")["live"] is True
    assert demo.query(SELLER, "T-DROP-1")["success"] is True
    assert sim.stats()["calls"]["BILL.PUSH"] == {"dropped_after_commit": 1}
    # The server survived: the same keep-alive client works again.
    assert demo.push(make_bill("T-DROP-2", SELLER))["success"] is True


def test_latency_fault_delays_answers(sim: SimulatorHandle, demo: CloudSession) -> None:
    sim.set_faults(latency_ms=300, latency_jitter_ms=100)
    started = time.monotonic()
    body = demo.query(SELLER, "T-SLOW")
    # A lower bound only (no upper bound: machines are slow sometimes).
    assert time.monotonic() - started >= 0.3
    assert body["message"] == "单据不存在"


def test_same_seed_same_misbehaviour(sim: SimulatorHandle, demo: CloudSession) -> None:
    def run(prefix: str) -> list[int]:
        sim.set_faults(push_5xx_before=0.5, seed=1234)
        statuses = []
        for index in range(30):
            response = demo.gateway("BILL.PUSH", [make_bill(f"{prefix}-{index}", SELLER)])
            statuses.append(response.status_code)
        return statuses

    first = run("SEED-A")
    second = run("SEED-B")
    assert first == second
    assert set(first) == {200, 502}  # both outcomes happen at p = 0.5 over 30 calls


def test_faults_from_the_start() -> None:
    with (
        running_simulator(faults=["push_5xx_before=1"]) as sim,
        CloudSession(sim, "demo") as demo,
    ):
        assert demo.gateway("BILL.PUSH", [make_bill("T-START", SELLER)]).status_code == 502
        assert sim.admin.get("/_sim/faults").json()["active"] == {"push_5xx_before": 1.0}
        sim.reset()  # reset returns to the plan given at start
        assert sim.admin.get("/_sim/faults").json()["active"] == {"push_5xx_before": 1.0}

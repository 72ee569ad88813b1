"""fapiao probe against the simulator over HTTP: every dialect it claims to find is the one played.

Each combination is set with PUT /_sim/dialect; the probe must report exactly the played value of
every switch it can determine safely, null for the rest, issue nothing and leave no test bill live.
"""

from __future__ import annotations

import json
import random
import secrets
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from producers.cli import CliContext, app
from producers.probe import PROBE_PREFIX, probe_bill, run_probe
from producers.testing import API_KEY, CALLBACK_SECRET
from schemas.cloud_contract import DIALECT_SWITCHES, Dialect, OutcomeClass
from schemas.erp import validate_bill
from schemas.settings import Settings
from schemas.tenants import TenantConfig, load_tenants
from simulator.testing import SimulatorHandle, running_simulator, sim_tenant_specs
from store.models import CloudCall
from worker.kingdee import (
    CallContext,
    CloudResult,
    HttpKingdeeClient,
    fetch_access_token,
)
from worker.ledger import SqlCallLedger

# What the probe can learn without issuing; the rest must come back null.
DETERMINED = (
    "unknown_bill",
    "withdraw_refusal",
    "expired_token",
    "success_data",
    "status_field",
    "duplicate_bill",
    "unknown_fields",
    "request_id",
)
UNDETERMINED = tuple(name for name in DIALECT_SWITCHES if name not in DETERMINED)


def _combinations(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {name: rng.choice(values) for name, values in DIALECT_SWITCHES.items()}
        for _ in range(count)
    ]


COMBINATIONS = _combinations(20, seed=20261206)


def test_the_combinations_play_every_value_of_every_determined_switch() -> None:
    for name in DETERMINED:
        assert {c[name] for c in COMBINATIONS} == set(DIALECT_SWITCHES[name]), name


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorHandle]:
    with running_simulator() as handle:
        yield handle


@pytest.fixture
def tenants_file(simulator: SimulatorHandle, tmp_path: Path) -> Path:
    """The simulator's tenants; ``demo`` is marked ``sandbox = true``, ``shop`` is not."""
    path = simulator.write_tenants_file(tmp_path / "tenants.toml")
    text = path.read_text(encoding="utf-8")
    # A generous rate limit: the probe takes its calls through the workers' Redis rate gate.
    marked = text.replace(
        '[[tenants]]\nname = "demo"\n',
        '[[tenants]]\nname = "demo"\nsandbox = true\nrate_limit_per_second = 50.0\n',
    )
    assert marked != text
    path.write_text(marked, encoding="utf-8")
    return path


def settings_for(database_url: str, redis_url: str, tenants_file: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        redis_url=redis_url,
        broker_url=redis_url,
        tenants_file=tenants_file,
        api_keys=[API_KEY],
        callback_secret=CALLBACK_SECRET,
    )


def probe(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(app, ["probe", *args], obj=CliContext(load_settings=lambda: settings))


def probe_bills(simulator: SimulatorHandle, **filters: str) -> list[dict[str, Any]]:
    return [b for b in simulator.bills(**filters) if str(b["billNo"]).startswith(PROBE_PREFIX)]


def assert_nothing_issued_nothing_live(
    simulator: SimulatorHandle, duplicated: Sequence[str] = ()
) -> None:
    """No invoice, no probe bill live; ``live_twice`` only for a deliberately duplicated bill
    (duplicate_bill=accepted: two copies, never issued, both withdrawn)."""
    stats = simulator.stats()
    assert stats["invoices"].get("issued", 0) == 0
    assert stats["doubleIssue"]["over_issued"] == []
    assert sorted(v["billNo"] for v in stats["doubleIssue"]["live_twice"]) == sorted(duplicated)
    assert probe_bills(simulator, live="1") == []


@pytest.mark.parametrize("played", COMBINATIONS, ids=[f"combo{i:02d}" for i in range(20)])
def test_probe_reports_exactly_the_played_dialect(
    played: dict[str, str],
    simulator: SimulatorHandle,
    tenants_file: Path,
    database_url: str,
    redis_url: str,
    session_factory: sessionmaker[Session],
) -> None:
    simulator.reset()
    assert simulator.set_dialect(**played) == played

    result = probe(
        settings_for(database_url, redis_url, tenants_file), "--tenant", "demo", "--json"
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cloud"] == {
        name: (played[name] if name in DETERMINED else None) for name in DIALECT_SWITCHES
    }
    assert report["leftLive"] == []
    # The test bills really were pushed (the pushes decided three switches), then withdrawn.
    pushed = probe_bills(simulator)
    b1, b2 = report["testBills"]
    expected = {b1: 2 if played["duplicate_bill"] == "accepted" else 1}
    if played["unknown_fields"] == "ignored":
        expected[b2] = 1
    assert {no: sum(b["billNo"] == no for b in pushed) for no in expected} == expected
    assert {b["billNo"] for b in pushed} == set(expected)
    assert all(b["state"] == "withdrawn" and b["autoInvoice"] is False for b in pushed)
    assert_nothing_issued_nothing_live(simulator, [b1] if expected[b1] == 2 else [])
    # Every call went through the worker's client: one ledger row each.
    with session_factory() as session:
        rows = session.scalar(
            select(func.count()).select_from(CloudCall).where(CloudCall.tenant == "demo")
        )
    assert rows is not None and rows >= 10


def test_without_sandbox_the_probe_refuses_and_calls_nothing(
    simulator: SimulatorHandle, tenants_file: Path, database_url: str, redis_url: str
) -> None:
    simulator.reset()
    before = simulator.stats()["calls"]

    result = probe(settings_for(database_url, redis_url, tenants_file), "--tenant", "shop")

    assert result.exit_code == 2
    assert "sandbox = true" in result.output and "--force" in result.output
    assert simulator.stats()["calls"] == before
    assert probe_bills(simulator) == []


def test_unknown_tenant_is_refused(
    simulator: SimulatorHandle, tenants_file: Path, database_url: str, redis_url: str
) -> None:
    result = probe(settings_for(database_url, redis_url, tenants_file), "--tenant", "nobody")

    assert result.exit_code == 2
    assert "nobody" in result.output


def test_force_probes_a_tenant_without_sandbox_and_prints_a_pasteable_table(
    simulator: SimulatorHandle,
    tenants_file: Path,
    database_url: str,
    redis_url: str,
    session_factory: sessionmaker[Session],
) -> None:
    simulator.reset()
    played = simulator.set_dialect(
        unknown_bill="empty_list", success_data="base64", merge="when_asked"
    )

    result = probe(
        settings_for(database_url, redis_url, tenants_file), "--tenant", "shop", "--force"
    )

    assert result.exit_code == 0, result.output
    # stdout is the TOML alone: pasted under a tenant it declares exactly the determined values.
    table = tomllib.loads(result.stdout)["tenants"]["cloud"]
    assert table == {name: played[name] for name in DETERMINED}
    assert "# merge: unknown" in result.stdout
    assert "[tenants.cloud]" in result.stdout
    assert_nothing_issued_nothing_live(simulator)
    # The printed table is accepted by the tenants file schema.
    block = tenants_file.read_text(encoding="utf-8") + "\n" + result.stdout
    pasted = tenants_file.with_name("pasted.toml")
    pasted.write_text(block, encoding="utf-8")
    tenants = load_tenants(pasted, "test")
    shop = tenants.by_name("shop")
    assert shop is not None and shop.cloud == table


def test_json_shape(
    simulator: SimulatorHandle,
    tenants_file: Path,
    database_url: str,
    redis_url: str,
    session_factory: sessionmaker[Session],
) -> None:
    simulator.reset()

    result = probe(
        settings_for(database_url, redis_url, tenants_file), "--tenant", "demo", "--json"
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {
        "tenant",
        "sellerTaxId",
        "startedAt",
        "cloud",
        "evidence",
        "testBills",
        "leftLive",
        "toml",
    }
    assert report["tenant"] == "demo"
    assert report["sellerTaxId"] == simulator.spec("demo")["seller_tax_ids"][0]
    assert list(report["cloud"]) == list(DIALECT_SWITCHES)
    assert list(report["evidence"]) == list(DIALECT_SWITCHES)
    for name in DETERMINED:
        evidence = report["evidence"][name]
        assert evidence["value"] == report["cloud"][name]
        assert evidence["reason"]
        assert evidence["calls"], name
        assert all(
            set(c) == {"call", "answer"} and c["call"] and c["answer"] for c in evidence["calls"]
        )
    for name in UNDETERMINED:
        assert report["evidence"][name]["value"] is None
        assert "never issues" in report["evidence"][name]["reason"]
    unknown_bill = report["evidence"]["unknown_bill"]["calls"][0]
    assert unknown_bill["call"].startswith("BILL.INVOICE.QUERY of unknown billNo PROBE-")
    assert "单据不存在" in unknown_bill["answer"]
    assert all(no.startswith(PROBE_PREFIX + "-") for no in report["testBills"])
    assert report["toml"].count("[tenants.cloud]") == 1


def test_probe_bill_is_a_valid_document_never_auto_issued(simulator: SimulatorHandle) -> None:
    from datetime import UTC, datetime

    seller = simulator.spec("demo")["seller_tax_ids"][0]
    wire = probe_bill("PROBE-20261206-ABCDEF12-B1", seller, datetime(2026, 12, 6, tzinfo=UTC))

    assert validate_bill(wire).to_wire() == wire
    assert wire["autoInvoice"] == "0"
    assert wire["sellerTaxpayerId"] == seller


class LosingWithdraws:
    """The real client, but every BILL.WITHDRAW of ``bill_no`` is lost on the way (no answer)."""

    def __init__(self, inner: HttpKingdeeClient, bill_suffix: str) -> None:
        self.inner = inner
        self.bill_suffix = bill_suffix
        self.lost = 0

    @property
    def tenant(self) -> TenantConfig:
        return self.inner.tenant

    def get_app_token(self) -> Any:
        return self.inner.get_app_token()

    def login(self, app_token: str) -> Any:
        return self.inner.login(app_token)

    def push(
        self, bill: Mapping[str, Any], *, access_token: str, context: CallContext
    ) -> CloudResult:
        return self.inner.push(bill, access_token=access_token, context=context)

    def query(
        self, bill_no: str, seller_tax_id: str, *, access_token: str, context: CallContext
    ) -> CloudResult:
        return self.inner.query(bill_no, seller_tax_id, access_token=access_token, context=context)

    def withdraw(
        self,
        bill_nos: Sequence[str],
        seller_tax_id: str,
        *,
        access_token: str,
        context: CallContext,
    ) -> CloudResult:
        if any(no.endswith(self.bill_suffix) for no in bill_nos):
            self.lost += 1
            return CloudResult(
                "BILL.WITHDRAW", "0", OutcomeClass.UNKNOWN_OUTCOME, None, None, "ReadTimeout (sent)"
            )
        return self.inner.withdraw(
            bill_nos, seller_tax_id, access_token=access_token, context=context
        )


def test_a_test_bill_the_cloud_never_confirmed_gone_is_reported(
    simulator: SimulatorHandle,
    tenants_file: Path,
    session_factory: sessionmaker[Session],
) -> None:
    simulator.reset()
    tenant = load_tenants(tenants_file, "test").by_name("demo")
    assert tenant is not None
    with httpx.Client(timeout=10.0) as http:
        real = HttpKingdeeClient(tenant, http, ledger=SqlCallLedger(session_factory))
        client = LosingWithdraws(real, "-B1")
        token = fetch_access_token(real).value

        report = run_probe(
            client,
            lambda envelope, access_token: real.send_envelope(
                envelope, access_token=access_token, context=CallContext()
            ),
            token,
        )

        assert len(report.left_live) == 1 and report.left_live[0].endswith("-B1")
        assert client.lost > 1  # asked again before giving up
        live = probe_bills(simulator, live="1")
        assert [b["billNo"] for b in live] == report.left_live  # it really is still there
        assert simulator.stats()["invoices"].get("issued", 0) == 0
        real.withdraw(
            report.left_live, tenant.seller_tax_ids[0], access_token=token, context=CallContext()
        )
    assert probe_bills(simulator, live="1") == []


def test_an_aes_tenant_is_probed_with_its_own_codec(
    database_url: str, redis_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    specs = sim_tenant_specs()
    specs[0].update(data_encryption="aes", aes_key="probe-" + secrets.token_hex(12))
    played = {"unknown_bill": "empty_list", "success_data": "base64", "request_id": "optional"}
    with running_simulator(specs, dialect=played) as aes_simulator:
        tenants = aes_simulator.write_tenants_file(tmp_path / "tenants.toml")
        text = tenants.read_text(encoding="utf-8")
        tenants.write_text(text.replace('name = "demo"\n', 'name = "demo"\nsandbox = true\n'))

        result = probe(settings_for(database_url, redis_url, tenants), "--tenant", "demo", "--json")

        assert result.exit_code == 0, result.output
        expected = {**Dialect.default().as_dict(), **played}
        assert json.loads(result.stdout)["cloud"] == {
            name: (expected[name] if name in DETERMINED else None) for name in DIALECT_SWITCHES
        }
        assert_nothing_issued_nothing_live(aes_simulator)

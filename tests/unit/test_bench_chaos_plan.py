"""bench.chaos: options and the dialect sweep's plan (which runs, with which simulator
arguments and tenant declarations), checked without starting a stack."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench import chaos
from bench.stack import declare_tenants_cloud
from schemas.cloud_contract import DIALECT_SWITCHES, Dialect
from schemas.tenants import load_tenants
from simulator.testing import sim_tenant_specs, write_tenants_toml

OTHER_VALUES = sum(len(values) - 1 for values in DIALECT_SWITCHES.values())
# The switches the sweep runs at their default value too (with their exercise).
EXERCISED = len(chaos.EXERCISES)


def test_a_single_run_is_undeclared_with_the_default_dialect_unless_asked() -> None:
    args, plan = chaos.parse_args([])
    assert (args.documents, args.timeout) == (5000, 900.0)
    assert len(plan) == 1
    assert plan[0].simulator_args() == []
    assert plan[0].tenants_cloud() == {}
    assert not plan[0].auto_merge


def test_dialect_options_reach_the_simulator_and_declare_fills_tenants_cloud() -> None:
    args, plan = chaos.parse_args(
        ["--quick", "--dialect", "merge=when_asked", "--dialect", "unknown_bill=empty_data",
         "--declare"]
    )  # fmt: skip
    assert args.documents == 300
    (run,) = plan
    assert run.simulator_args() == [
        "--dialect", "unknown_bill=empty_data", "--dialect", "merge=when_asked",
    ]  # fmt: skip
    assert (
        run.tenants_cloud()
        == Dialect.parse(["merge=when_asked", "unknown_bill=empty_data"]).as_dict()
    )
    assert run.auto_merge
    _, (undeclared,) = chaos.parse_args(["--dialect", "merge=when_asked", "--no-declare"])
    assert undeclared.tenants_cloud() == {}


@pytest.mark.parametrize(
    ("spec", "named"),
    [("merge=sometimes", "'sometimes'"), ("nonsense=1", "'nonsense'"), ("merge", "NAME=VALUE")],
)
def test_an_unknown_dialect_is_a_usage_error(
    spec: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        chaos.parse_args(["--dialect", spec])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert named in err


def test_the_sweep_runs_every_value_of_every_switch_declared_and_undeclared() -> None:
    args, plan = chaos.parse_args(["--dialects", "all"])
    assert (args.documents, args.disrupt_every) == (chaos.SWEEP_DOCUMENTS, 2.0)
    per_mode = 1 + OTHER_VALUES + EXERCISED
    assert len(plan) == 2 * per_mode
    assert Counter(run.declared for run in plan) == {False: per_mode, True: per_mode}
    defaults = [run for run in plan if run.switch == chaos.DEFAULTS_ROW]
    assert [run.simulator_args() for run in defaults] == [[], []]
    seen = set()
    for run in plan:
        if run.switch == chaos.DEFAULTS_ROW:
            continue
        # Only the swept switch differs from the default, and the simulator is told so.
        default = DIALECT_SWITCHES[run.switch][0]
        changed = {} if run.value == default else {run.switch: run.value}
        assert run.simulator_dialect() == changed
        assert run.simulator_args() == [
            a for k, v in changed.items() for a in ("--dialect", f"{k}={v}")
        ]
        assert run.exercises == ((run.switch,) if run.switch in chaos.EXERCISES else ())
        expected_cloud = Dialect.default().replace({run.switch: run.value}).as_dict()
        assert run.tenants_cloud() == (expected_cloud if run.declared else {})
        assert run.auto_merge == (run.switch == "merge")
        seen.add((run.switch, run.value, run.declared))
    wanted = {
        (switch, value, declared)
        for switch, values in DIALECT_SWITCHES.items()
        for value in (values if switch in chaos.EXERCISES else values[1:])
        for declared in (False, True)
    }
    assert seen == wanted


def test_the_sweep_keeps_given_sizes_one_declaration_mode_and_a_base_dialect() -> None:
    args, plan = chaos.parse_args(
        [
            "--dialects",
            "all",
            "-n",
            "12",
            "--jobs",
            "2",
            "--declare",
            "--dialect",
            "merge=when_asked",
        ]
    )
    assert (args.documents, args.jobs) == (12, 2)
    assert len(plan) == 1 + OTHER_VALUES + EXERCISED
    assert all(run.declared for run in plan)
    # The base dialect holds for every run; merge's other value (never) is swept instead.
    assert plan[0].simulator_args() == ["--dialect", "merge=when_asked"]
    merge_runs = [run for run in plan if run.switch == "merge"]
    assert [(run.value, run.simulator_args()) for run in merge_runs] == [("never", [])]
    others = [run for run in plan[1:] if run.switch != "merge"]
    assert all(run.dialect.merge == "when_asked" for run in others)


def test_declare_tenants_cloud_declares_the_table_for_every_tenant(tmp_path: Path) -> None:
    specs = sim_tenant_specs()
    path = write_tenants_toml(tmp_path / "tenants.toml", "http://127.0.0.1:1", specs)
    declared = Dialect.default().replace({"merge": "when_asked"}).as_dict()
    declare_tenants_cloud(path, declared)
    tenants = load_tenants(path, "development").tenants
    assert [t.name for t in tenants] == [s["name"] for s in specs]
    assert all(t.cloud == declared for t in tenants)
    assert all(t.seller_tax_ids for t in tenants)  # the keys before the table stay the tenant's


def test_a_table_row_names_the_failing_invariants_and_merged_invoices() -> None:
    figures = {
        "switch": "merge", "value": "when_asked", "declared": True, "documents": 40,
        "by_status": {"invoiced": 38, "returned": 1, "pushed": 1}, "seconds": 31.5,
        "violations": {"issued_twice": ["x", "y"]},
        "merged_invoices": {"invoices": 5, "documents": 17},
    }  # fmt: skip
    assert chaos.table_row(figures) == (
        "| merge | when_asked | yes | 40 | 38 (17 on 5 merged invoices) | returned 1"
        " | FAIL issued_twice (2) (not settled: pushed 1) | 31.5 |"
    )
    figures.update(exercises=["issue_fail 10 %"], violations={}, by_status={"invoiced": 40})
    assert chaos.table_row(figures).startswith(
        "| merge | when_asked (issue_fail 10 %) | yes | 40 | 40 (17 on 5 merged invoices)"
        " | - | OK |"
    )


def test_the_sweep_can_be_narrowed_to_named_switches() -> None:
    _, plan = chaos.parse_args(["--dialects", "unknown_bill,merge", "--no-declare"])
    assert [(run.switch, run.value, run.declared) for run in plan] == [
        ("unknown_bill", "empty_list", False),
        ("unknown_bill", "empty_data", False),
        ("merge", "when_asked", False),
    ]
    _, plan = chaos.parse_args(["--dialects", "withdraw_refusal", "--declare"])
    assert [(run.value, run.simulator_args(), run.exercises) for run in plan] == [
        ("per_item", [], ("withdraw_refusal",)),
        ("envelope", ["--dialect", "withdraw_refusal=envelope"], ("withdraw_refusal",)),
    ]
    with pytest.raises(SystemExit):
        chaos.parse_args(["--dialects", "merge,nonsense"])

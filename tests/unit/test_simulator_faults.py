"""Fault plans and seeded dice (simulator.faults)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from simulator.faults import (
    FAULT_NAMES,
    PROBABILITY_FAULTS,
    FaultDice,
    FaultPlan,
    FaultSpecError,
    parse_fault_spec,
)


def test_specs_parse_into_a_plan() -> None:
    plan = FaultPlan.from_specs(["push_5xx_before=0.1", "drop_after_commit=0.05", "auth_fail"])
    assert plan.active() == {"push_5xx_before": 0.1, "drop_after_commit": 0.05, "auth_fail": 1.0}
    assert plan.as_json(active_only=True)["push_5xx_before"] == Decimal("0.1")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("warp_drive=1", "unknown fault 'warp_drive'"),
        ("push_5xx_before=often", "not a number"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, fragment: str) -> None:
    with pytest.raises(FaultSpecError, match=fragment):
        parse_fault_spec(spec)


def test_probabilities_are_bounded_values_are_not() -> None:
    with pytest.raises(FaultSpecError, match="probability"):
        FaultPlan(issue_fail=1.5)
    with pytest.raises(FaultSpecError, match="negative"):
        FaultPlan(latency_ms=-1)
    assert FaultPlan(latency_ms=2500, callback_delay_s=90).active() == {
        "latency_ms": 2500.0,
        "callback_delay_s": 90.0,
    }
    assert "latency_ms" not in PROBABILITY_FAULTS
    assert "issue_fail" in PROBABILITY_FAULTS


def test_updated_refuses_unknown_names_and_keeps_the_rest() -> None:
    plan = FaultPlan(token_expire=0.5)
    assert plan.updated({"quota_warning": 1}).active() == {
        "token_expire": 0.5,
        "quota_warning": 1.0,
    }
    with pytest.raises(FaultSpecError, match="nope"):
        plan.updated({"nope": 1})


def test_every_fault_is_documented_in_the_module_table() -> None:
    import simulator.faults

    doc = simulator.faults.__doc__ or ""
    assert [name for name in FAULT_NAMES if f"``{name}``" not in doc] == []


def test_same_seed_same_rolls() -> None:
    plan = FaultPlan(push_5xx_before=0.3, latency_jitter_ms=50)
    first, second = FaultDice(plan, seed=99), FaultDice(plan, seed=99)
    rolls_a = [(first.roll("push_5xx_before"), first.latency_s()) for _ in range(200)]
    rolls_b = [(second.roll("push_5xx_before"), second.latency_s()) for _ in range(200)]
    assert rolls_a == rolls_b
    hits = sum(1 for hit, _ in rolls_a if hit)
    assert 20 < hits < 120  # p = 0.3 over 200 rolls, far from 0 and 200
    first.reseed(99)
    assert [(first.roll("push_5xx_before"), first.latency_s()) for _ in range(200)] == rolls_a


def test_off_and_certain_faults_do_not_consume_randomness() -> None:
    dice = FaultDice(FaultPlan(auth_fail=1.0), seed=5)
    reference = FaultDice(FaultPlan(), seed=5)
    assert dice.roll("auth_fail") is True
    assert dice.roll("issue_fail") is False
    assert dice.latency_s() == 0.0
    assert dice.randint(0, 10**9) == reference.randint(0, 10**9)

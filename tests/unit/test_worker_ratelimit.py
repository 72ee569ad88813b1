"""The per-tenant rate gate with a fake clock (fakeredis with Lua; no sleeping for real)."""

from __future__ import annotations

import fakeredis
import pytest

from worker.kingdee import CloudTransientError
from worker.ratelimit import RedisRateGate


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def gate(clock: Clock, max_wait: float = 10.0) -> RedisRateGate:
    return RedisRateGate(
        fakeredis.FakeRedis(server=fakeredis.FakeServer()),
        max_wait_seconds=max_wait,
        clock=clock,
        sleep=clock.sleep,
    )


def test_allows_the_rate_then_waits_for_the_next_window() -> None:
    clock = Clock()
    g = gate(clock)
    for _ in range(3):
        g.wait("acme", 3)
    assert clock.slept == []
    g.wait("acme", 3)
    assert clock.slept == [pytest.approx(1.0)]


def test_tenants_have_separate_allowances() -> None:
    clock = Clock()
    g = gate(clock)
    g.wait("a", 1)
    g.wait("b", 1)
    assert clock.slept == []
    g.wait("a", 1)
    assert len(clock.slept) == 1


def test_slow_rates_use_longer_windows() -> None:
    clock = Clock()  # 5000.0 is a multiple of 5 s: a window starts now
    g = gate(clock)
    g.wait("acme", 0.2)
    g.wait("acme", 0.2)
    assert clock.slept == [pytest.approx(5.0)]


def test_gives_up_after_max_wait_without_sending() -> None:
    clock = Clock()
    g = gate(clock, max_wait=0.5)
    g.wait("acme", 1)
    with pytest.raises(CloudTransientError, match="rate limit"):
        g.wait("acme", 1)

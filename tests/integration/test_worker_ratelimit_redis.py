"""The per-tenant rate gate on a real Redis, shared by several "workers" (clients) at once."""

from __future__ import annotations

import threading

from redis import Redis

from worker.kingdee import CloudTransientError
from worker.ratelimit import RedisRateGate

FROZEN_NOW = 1_800_000_000.25  # every caller sees the same instant: one window


def _gate(url: str) -> RedisRateGate:
    # max_wait 0: a caller that finds the window full fails at once instead of sleeping,
    # so the test counts admissions without depending on real time.
    return RedisRateGate(Redis.from_url(url), max_wait_seconds=0, clock=lambda: FROZEN_NOW)


def test_one_allowance_per_window_across_processes_and_tenants_apart(redis_url: str) -> None:
    gates = [_gate(redis_url), _gate(redis_url)]  # two worker processes' own connections
    admitted: dict[str, int] = {"acme": 0, "other": 0}
    refused: dict[str, int] = {"acme": 0, "other": 0}
    lock = threading.Lock()
    start = threading.Barrier(24)

    def call(gate: RedisRateGate, tenant: str) -> None:
        start.wait()
        try:
            gate.wait(tenant, 5)
        except CloudTransientError:
            with lock:
                refused[tenant] += 1
        else:
            with lock:
                admitted[tenant] += 1

    threads = [
        threading.Thread(target=call, args=(gates[i % 2], "acme" if i < 20 else "other"))
        for i in range(24)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert admitted == {"acme": 5, "other": 4}  # 5/s for everyone together, per tenant
    assert refused == {"acme": 15, "other": 0}  # acme's flood never touched other's window

"""``worker.services.cloud_call.call_each``: a batch's calls on the process's kept threads."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from worker.services.cloud_call import call_each


def _rt(concurrency: int) -> Any:
    return SimpleNamespace(
        settings=SimpleNamespace(push=SimpleNamespace(batch_concurrency=concurrency))
    )


def test_results_come_back_in_the_order_of_the_items() -> None:
    def slow_first(n: int) -> int:
        time.sleep(0.02 if n == 0 else 0)
        return n * 10

    assert call_each(_rt(4), slow_first, list(range(9))) == [n * 10 for n in range(9)]


def test_at_most_batch_concurrency_calls_run_at_once() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def call(_: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    call_each(_rt(3), call, list(range(12)))
    assert peak == 3


def test_the_threads_are_kept_between_batches() -> None:
    def thread_of(_: int) -> threading.Thread:
        time.sleep(0.005)
        return threading.current_thread()  # the object: an ident may be reused by a new thread

    first = set(call_each(_rt(5), thread_of, list(range(10))))
    second = set(call_each(_rt(5), thread_of, list(range(10))))
    assert threading.current_thread() not in first
    assert second <= first  # no new thread started for the second batch


def test_a_single_call_runs_in_the_callers_thread() -> None:
    assert call_each(_rt(8), lambda _: threading.get_ident(), [1]) == [threading.get_ident()]

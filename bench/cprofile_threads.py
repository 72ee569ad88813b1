"""cProfile of every Python thread of a process, each timed by its own CPU clock.

    python -m bench.cprofile_threads OUT.prof -m MODULE [ARGS...]

``bench.cprofile_cpu`` profiles the main thread only. An ASGI server runs its event loop
there but the app's blocking work (``run_in_threadpool``: database transactions, background
tasks) in a pool of threads, which that profile would miss. Here every thread started after
the module begins gets a ``cProfile.Profile`` of its own (``threading.setprofile`` installs it
on the thread's first event); each profiler, the main thread's too, is timed by
``time.thread_time``, so a function's time is the CPU its own thread used and the profiles add
up to the process's CPU (C threads aside).

Signals, for a harness that measures phases of a long-running server:

| signal | effect |
|---|---|
| ``SIGUSR2`` | forget everything profiled so far (start-up, warm-up) |
| ``SIGUSR1`` | write the profiles so far (threads merged) to ``OUT.<n>`` (1, 2, …), forget them |
| exit (``SIGINT``; uvicorn re-raises it after its graceful shutdown) | write ``OUT`` |

A thread's profiler is only ever enabled and disabled by that thread; the main thread reads
and clears the others' while they wait in the pool (a server between requests). A frame still
open when the stats are written is left out (a pool thread's wait for work); a cleared
profiler forgets its open frames.
"""

from __future__ import annotations

import cProfile
import marshal
import runpy
import signal
import sys
import threading
import time
from typing import Any

__all__ = ["main"]


class _Profilers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[cProfile.Profile] = []
        self.dumps = 0

    def new(self) -> cProfile.Profile:
        profiler = cProfile.Profile(time.thread_time)
        with self._lock:
            self._all.append(profiler)
        return profiler

    def start_thread(self, *_args: Any) -> None:
        """``threading.setprofile`` hook: the thread's first event enables its own profiler
        (which replaces this hook for the thread)."""
        self.new().enable()

    def clear(self) -> None:
        with self._lock:
            for profiler in self._all:
                profiler.clear()

    def write(self, path: str) -> None:
        """Every profiler's stats merged into one pstats file (``pstats.Stats.add`` rules)."""
        merged: dict[Any, list[Any]] = {}
        with self._lock:
            profilers = list(self._all)
        for profiler in profilers:
            # Not create_stats(): its disable() would close the thread's open frames (a pool
            # thread waiting for work) with the clock of the thread calling it.
            profiler.snapshot_stats()
            stats: dict[Any, Any] = profiler.stats
            for func, (cc, nc, tt, ct, callers) in stats.items():
                row = merged.get(func)
                if row is None:
                    merged[func] = [cc, nc, tt, ct, dict(callers)]
                    continue
                row[0] += cc
                row[1] += nc
                row[2] += tt
                row[3] += ct
                for caller, value in callers.items():
                    old = row[4].get(caller)
                    row[4][caller] = (
                        value
                        if old is None
                        else tuple(a + b for a, b in zip(old, value, strict=True))
                    )
        with open(path, "wb") as out:
            marshal.dump({func: tuple(row) for func, row in merged.items()}, out)


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit(__doc__)
    out, module = sys.argv[1], sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    profilers = _Profilers()
    main_profiler = profilers.new()

    def forget(_signum: int, _frame: object) -> None:
        profilers.clear()

    def dump(_signum: int, _frame: object) -> None:
        main_profiler.disable()
        profilers.dumps += 1
        profilers.write(f"{out}.{profilers.dumps}")
        profilers.clear()
        main_profiler.enable()

    signal.signal(signal.SIGUSR2, forget)
    signal.signal(signal.SIGUSR1, dump)
    threading.setprofile(profilers.start_thread)
    main_profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:
        pass
    finally:
        main_profiler.disable()
        threading.setprofile(None)
        profilers.write(out)


if __name__ == "__main__":
    main()

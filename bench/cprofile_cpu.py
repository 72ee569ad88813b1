"""``python -m cProfile`` with the process's CPU clock instead of the wall clock.

    python -m bench.cprofile_cpu OUT.prof -m MODULE [ARGS...]

``python -m cProfile`` times with ``time.perf_counter``: a worker blocked on the cloud's 20 ms
or on PostgreSQL shows that wait as the ``tottime`` of ``socket.recv``/``poll``. Timed with
``time.process_time`` (user + system CPU of the process), a function's time is the CPU it
used, so shares of the profile are shares of CPU. The stats are written when the module
returns or raises (a Celery worker's warm shutdown on SIGTERM raises ``SystemExit``).
``SIGUSR2`` forgets everything profiled so far (send it once the worker is ready, so imports
and start-up are not in the profile; Celery leaves that signal alone unless ``CELERY_RDBSIG``
is set).
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit(__doc__)
    out, module = sys.argv[1], sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    profiler = cProfile.Profile(time.process_time)

    def restart(_signum: int, _frame: object) -> None:
        profiler.disable()
        profiler.clear()
        profiler.enable()

    signal.signal(signal.SIGUSR2, restart)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()

"""Flower's options for this bridge, in one place: ``flower_options(db=…)``.

``celery -A worker flower`` takes them on its command line; ``demo.stack`` builds its argv
here and ``docker-compose.yml`` spells the same options out (a unit test keeps the two equal).

| option                  | value                                    | why                        |
|-------------------------|------------------------------------------|----------------------------|
| ``--tasks_columns``     | ``TASKS_COLUMNS``: name, uuid, state,    | the task list shows each   |
|                         | args, kwargs, result, received, started, | message's ``bill_no`` /    |
|                         | runtime, worker                          | ``tenant`` (kwargs) and    |
|                         |                                          | what became of it (result) |
| ``--persistent``        | True (when ``db`` is given)              | history survives a restart |
| ``--db``                | a file on a volume                       | where Flower keeps it      |
| ``--state_save_interval``| ``STATE_SAVE_INTERVAL_MS`` (60 s)       | a crash loses at most that |
|                         |                                          | much; a clean stop saves   |

Searching: Flower's search box (and ``/api/tasks?search=``) matches ``kwargs:bill_no=B1``
exactly, and any text (a bill number inside a batch's ``bill_nos``, a reason, an error code)
as a substring of args, kwargs and result. What Flower shows comes from worker events: the
maintenance tasks stay out of it unless they fail (``worker.tasks``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["STATE_SAVE_INTERVAL_MS", "TASKS_COLUMNS", "flower_options"]

TASKS_COLUMNS: Final = "name,uuid,state,args,kwargs,result,received,started,runtime,worker"
STATE_SAVE_INTERVAL_MS: Final = 60_000


def flower_options(
    *, db: str | Path | None, state_save_interval_ms: int = STATE_SAVE_INTERVAL_MS
) -> list[str]:
    """Flower's options (module table); ``db=None`` keeps the history in memory only."""
    options = [f"--tasks_columns={TASKS_COLUMNS}"]
    if db is None:
        return [*options, "--persistent=False"]
    return [
        *options,
        "--persistent=True",
        f"--db={db}",
        f"--state_save_interval={state_save_interval_ms}",
    ]

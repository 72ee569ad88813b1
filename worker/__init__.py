"""worker: the Celery engine of fapiao-bridge (``celery -A worker worker|beat|flower``).

| module                 | holds                                                          |
|------------------------|----------------------------------------------------------------|
| ``worker.app``         | ``create_app(settings)``: configuration, queues, beat schedule |
| ``worker.tasks``       | the thin ``fapiao.*`` tasks, one ``Runtime`` per process        |
| ``worker.enqueue``     | ``Enqueuer``: the one port to the broker (Celery, recording)   |
| ``worker.runtime``     | ``Runtime``: the composition root handed to services           |
| ``worker.services``    | push (batches; one id is a batch of one), in-doubt, poll,      |
|                        | reconcile, withdraw, notify, sweep, refresh; shared: query,    |
|                        | invoices, cloud_call, tenancy, erp_outbox, milestones          |
| ``worker.kingdee``     | ``KingdeeClient`` port + httpx adapter, outcome mapping         |
| ``worker.tokens``      | ``TokenCache``: process copy over Redis, single-flight refresh  |
| ``worker.ratelimit``   | ``RedisRateGate``: per-tenant limit shared by all workers       |
| ``worker.retry_policy``| the one retry policy: decisions and the retry table            |
| ``worker.ledger``      | ``SqlCallLedger``: ``cloud_calls`` rows                         |
| ``worker.queues``      | task names and routes                                          |
| ``worker.logs``        | JSON / console log formatters (extras kept, secrets masked)    |
| ``worker.metrics``     | Prometheus counters (token refreshes, calls, alerts, …)        |
| ``worker.flower``      | Flower's options (task columns, persistent history)            |
| ``worker.beat``        | ``python -m worker.beat``: is some (redbeat) beat firing?      |
| ``worker.testing``     | fast settings, ``drain``, stored bills (tests only)            |

``worker.app`` (alias ``worker.celery``) is built on first access from ``Settings.load()``;
importing ``worker`` connects to nothing and reads no environment.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.app import FapiaoCelery

__all__ = [
    "app",
    "create_app",
    "get_app",
]

_app: FapiaoCelery | None = None
_app_lock = threading.Lock()


def get_app() -> FapiaoCelery:
    """The process-wide app, built from the environment on first use."""
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                from worker.app import create_app

                _app = create_app()
    return _app


def __getattr__(name: str) -> Any:
    # Celery's `-A worker` looks up `worker.app`, then `worker.celery` (PEP 562 makes it lazy).
    if name in ("app", "celery"):
        return get_app()
    if name == "create_app":
        from worker.app import create_app

        return create_app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")

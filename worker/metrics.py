"""Prometheus metrics of the worker, and the exporter that serves them.

| metric                                | type      | labels             | what               |
|---------------------------------------|-----------|--------------------|--------------------|
| ``fapiao_token_refreshes_total``      | counter   | tenant             | tokens fetched     |
| ``fapiao_cloud_calls_total``          | counter   | interface, outcome | calls to Kingdee   |
| ``fapiao_cloud_call_seconds``         | histogram | interface          | their latency      |
| ``fapiao_rate_limited_total``         | counter   | tenant             | rate-limit waits   |
| ``fapiao_stuck_documents_total``      | counter   | status             | age alerts raised  |
| ``fapiao_erp_notifications_total``    | counter   | result             | ERP webhook sends  |
| ``fapiao_tenant_pauses_total``        | counter   | tenant             | tenants paused     |
| ``fapiao_submit_to_pushed_seconds``   | histogram | tenant             | created → pushed   |
| ``fapiao_submit_to_invoiced_seconds`` | histogram | tenant             | created → invoiced |
| ``fapiao_quota_warning``              | gauge     | tenant             | last isWarning     |
| ``fapiao_sweeps_total``               | counter   |                    | sweeper passes     |
| ``fapiao_invoice_changes_total``      | counter   | tenant, standing   | voids / reversals  |

Latency is the ledger's ``latency_ms`` (request sent → answer classified, rate-limit wait
included). The two document histograms are observed once per document, when the transition
is applied (``worker.services.milestones.observe_milestones``). ``fapiao_quota_warning`` is the
``bizControl.isWarning`` of the tenant's latest applied invoice callback (the stored quota per
seller, its hold and a day-long warning are the API's ``fapiao_quota_*`` gauges); a stopped
``fapiao_sweeps_total`` means beat or the maintenance queue is not running.
``fapiao_invoice_changes_total`` counts issued invoices whose standing moved after issuance
(``standing``: partially_reversed, reversed, voided; ``worker.services.invoices``).

Metrics are created once per process on first use, in the default registry.

Serving them (``celery worker`` with ``FAPIAO_METRICS__WORKER_PORT`` set; ``worker.app``):
prefork children count in their own processes, so the worker runs prometheus_client's
multiprocess mode. Before the pool forks, the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory under ``FAPIAO_METRICS__MULTIPROC_DIR`` (default: the system temp dir), or
empties the one the operator set; every process then writes its values to its own file there,
and the parent's exporter serves the sum over every child, living or dead. The library picks
its storage when it is first imported, and the celery command imports it (through Flower's
plugin) before any app code runs: when the variable was not set at start, the worker re-execs
itself once with it (same pid, same arguments). Threads and solo pools are one process: the
same code serves them. The directory is removed at shutdown when the worker created it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ALL",
    "MULTIPROC_ENV",
    "Exporter",
    "MultiprocessDir",
    "cloud_call_seconds",
    "cloud_calls",
    "erp_notifications",
    "invoice_changes",
    "prepare_multiprocess",
    "process_dead",
    "quota_warning",
    "rate_limited",
    "start_exporter",
    "stuck_documents",
    "submit_to_invoiced",
    "submit_to_pushed",
    "sweeps",
    "tenant_pauses",
    "token_refreshes",
]

log = logging.getLogger(__name__)

# prometheus_client's own switch: read once, when the library is first imported.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Kingdee answers in tens of milliseconds to seconds; the read timeout is 30 s by default.
CALL_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PUSHED_BUCKETS: Final = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
INVOICED_BUCKETS: Final = (
    5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200,
)  # fmt: skip


@cache
def token_refreshes() -> Counter:
    from prometheus_client import Counter

    return Counter("fapiao_token_refreshes_total", "Access tokens fetched from Kingdee", ["tenant"])


@cache
def cloud_calls() -> Counter:
    from prometheus_client import Counter

    return Counter(
        "fapiao_cloud_calls_total", "Calls to Kingdee by outcome class", ["interface", "outcome"]
    )


@cache
def cloud_call_seconds() -> Histogram:
    from prometheus_client import Histogram

    return Histogram(
        "fapiao_cloud_call_seconds",
        "Latency of calls to Kingdee (request sent to answer classified)",
        ["interface"],
        buckets=CALL_BUCKETS,
    )


@cache
def rate_limited() -> Counter:
    from prometheus_client import Counter

    return Counter(
        "fapiao_rate_limited_total", "Calls delayed by the per-tenant rate limit", ["tenant"]
    )


@cache
def stuck_documents() -> Counter:
    from prometheus_client import Counter

    return Counter(
        "fapiao_stuck_documents_total", "Documents too long in one state (alerts)", ["status"]
    )


@cache
def erp_notifications() -> Counter:
    from prometheus_client import Counter

    return Counter("fapiao_erp_notifications_total", "ERP webhook deliveries", ["result"])


@cache
def tenant_pauses() -> Counter:
    from prometheus_client import Counter

    return Counter("fapiao_tenant_pauses_total", "Tenants paused by the worker", ["tenant"])


@cache
def submit_to_pushed() -> Histogram:
    from prometheus_client import Histogram

    return Histogram(
        "fapiao_submit_to_pushed_seconds",
        "From the document's creation to the cloud accepting its push (once per document)",
        ["tenant"],
        buckets=PUSHED_BUCKETS,
    )


@cache
def submit_to_invoiced() -> Histogram:
    from prometheus_client import Histogram

    return Histogram(
        "fapiao_submit_to_invoiced_seconds",
        "From the document's creation to invoiced (once per document)",
        ["tenant"],
        buckets=INVOICED_BUCKETS,
    )


@cache
def quota_warning() -> Gauge:
    from prometheus_client import Gauge

    return Gauge(
        "fapiao_quota_warning",
        "1 when the tenant's last invoice callback had bizControl.isWarning true",
        ["tenant"],
        multiprocess_mode="mostrecent",  # the newest callback wins, whichever child saw it
    )


@cache
def invoice_changes() -> Counter:
    from prometheus_client import Counter

    return Counter(
        "fapiao_invoice_changes_total",
        "Issued invoices voided or (partly) reversed after issuance",
        ["tenant", "standing"],
    )


@cache
def sweeps() -> Counter:
    from prometheus_client import Counter

    return Counter("fapiao_sweeps_total", "Sweeper passes completed")


# Every metric of this module (the exporter declares them all so a scrape lists each name).
ALL: Final = (
    token_refreshes,
    cloud_calls,
    cloud_call_seconds,
    rate_limited,
    stuck_documents,
    erp_notifications,
    tenant_pauses,
    submit_to_pushed,
    submit_to_invoiced,
    quota_warning,
    invoice_changes,
    sweeps,
)


# ------------------------------------------------------------------------------ exporter


OWN_DIR_PREFIX: Final = "fapiao-metrics-"


@dataclass(frozen=True, slots=True)
class MultiprocessDir:
    path: Path
    reexec_needed: bool  # prometheus_client was imported before the variable was set


def prepare_multiprocess(parent_dir: Path | None) -> MultiprocessDir:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory for this process tree.

    Already set (by the operator, or by this function before a re-exec): that directory,
    emptied of counter files from an earlier run. Not set: a fresh directory under
    ``parent_dir``; if prometheus_client was already imported (the celery CLI loads Flower,
    which imports it), its storage was chosen without the variable and the process must
    re-exec itself for the mode to take effect.
    """
    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        path = Path(existing)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return MultiprocessDir(path, reexec_needed=False)
    if parent_dir is not None:
        parent_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=OWN_DIR_PREFIX, dir=parent_dir))
    os.environ[MULTIPROC_ENV] = str(path)
    return MultiprocessDir(path, reexec_needed="prometheus_client" in sys.modules)


@dataclass(slots=True)
class Exporter:
    """A running exporter; ``stop()`` closes the port and removes a directory it created."""

    port: int
    directory: Path
    _server: Any

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.directory.name.startswith(OWN_DIR_PREFIX):
            shutil.rmtree(self.directory, ignore_errors=True)


def start_exporter(port: int, host: str, directory: Path) -> Exporter:
    """Serve the sum of every process's files in ``directory`` (``prepare_multiprocess``)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    for metric in ALL:
        metric()
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    log.info(
        "worker metrics exporter listening",
        extra={"port": bound, "host": host, "multiproc_dir": str(directory)},
    )
    return Exporter(bound, directory, server)


def process_dead(pid: int) -> None:
    """A pool child exited: drop its live-gauge files (its counters stay in the sums)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]

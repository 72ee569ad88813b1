"""``GET /metrics``: Prometheus text from a per-app ``CollectorRegistry``.

Most numbers are read from the database at scrape time, so every API replica reports the
same truth whichever process did the work (workers run elsewhere). The receiver's own
counters are summed over the API processes of one ``fapiao api`` (below).

| metric | type | labels | source |
|---|---|---|---|
| ``fapiao_documents`` | gauge | state, tenant | current documents per state |
| ``fapiao_documents_oldest_age_seconds`` | gauge | state, tenant | longest wait in the state (b) |
| ``fapiao_cloud_calls_recorded_total`` | counter | interface, outcome | ``cloud_calls`` ledger |
| ``fapiao_token_refreshes_recorded_total`` | counter | tenant | successful ``login`` calls |
| ``fapiao_callback_inbox`` | gauge | state | inbox rows (orphan: no bill matched) |
| ``fapiao_erp_outbox`` | gauge | state | ERP notifications (parked: gave up) |
| ``fapiao_tenant_paused`` | gauge | tenant | 1 while a tenant is paused |
| ``fapiao_quota_day_surplus_yuan`` | gauge | tenant, seller | credit quota left today (a) |
| ``fapiao_quota_month_surplus_yuan`` | gauge | tenant, seller | … this month (a) |
| ``fapiao_quota_is_warning`` | gauge | tenant, seller | 1: the cloud's ``isWarning`` today |
| ``fapiao_quota_held`` | gauge | tenant, seller | 1 while pushes wait for quota |
| ``fapiao_queue_depth`` | gauge | queue | Redis LLEN of each Celery queue |
| ``fapiao_reconciliation_findings`` | gauge | tenant, kind | the newest nightly report's counts |
| ``fapiao_reconciliation_last_run_timestamp_seconds`` | gauge | tenant | when it finished |
| ``fapiao_metrics_source_up`` | gauge | source | 0 when the database/Redis was unreadable |
| ``fapiao_callbacks_received_total`` | counter | result | API processes: stored, duplicate, … |
| ``fapiao_documents_submitted_total`` | counter | outcome | API processes: created, invalid, … |

(a) ``tenant_quota`` (``store.quota``): the latest believable ``bizControl``; absent when
none is known for the current Asia/Shanghai day (month). (b) Drafts held for credit quota
are left out (they wait on purpose; ``fapiao_quota_held`` alerts on them).

``_recorded_total`` names avoid a clash with the worker's in-process counters of the same
facts (``worker.metrics``).

Several API processes (``fapiao api --workers N``): the command points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before uvicorn spawns them, each process
writes its counters there, and ``/metrics`` from any of them serves the sum over all
(``MultiProcessCollector``) plus the database numbers, so successive scrapes agree whichever
process answers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.columns import utcnow
from store.models import CallbackInbox, CloudCall, Document, ErpOutbox, TenantQuota, TenantState
from store.queries import waiting_since
from store.quota import quota_rows, shanghai_day
from store.reconciliation import latest_reports
from store.states import DocumentStatus, InboxState, OutboxState

__all__ = ["MULTIPROC_ENV", "QUEUES", "BridgeMetrics", "DatabaseCollector"]

log = logging.getLogger(__name__)

# prometheus_client's switch for multiprocess mode (set by ``fapiao api --workers N``).
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# The worker's queues (worker/queues.py QUEUES); repeated as data so /metrics needs no worker.
QUEUES: Final[tuple[str, ...]] = ("push", "poll", "callbacks", "erp", "maintenance")

LOGIN_INTERFACE: Final = "login"
TOKEN_OK_OUTCOME: Final = "accepted"


class DatabaseCollector(Collector):
    """Reads the database (and the broker's Redis) at scrape time."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        tenant_names: Callable[[], Iterable[str]],
        queue_depth: Callable[[str], int] | None = None,
    ) -> None:
        self._sessions = sessions
        self._tenant_names = tenant_names
        self._queue_depth = queue_depth

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "fapiao_metrics_source_up", "1 when the source could be read", labels=["source"]
        )
        try:
            yield from self._database()
            up.add_metric(["database"], 1)
        except Exception as exc:  # a scrape must answer even when the database is down
            log.warning("metrics: database unreadable: %s", type(exc).__name__)
            up.add_metric(["database"], 0)
        if self._queue_depth is not None:
            depth = GaugeMetricFamily(
                "fapiao_queue_depth", "Messages waiting in each Celery queue", labels=["queue"]
            )
            try:
                for queue in QUEUES:
                    depth.add_metric([queue], self._queue_depth(queue))
                yield depth
                up.add_metric(["redis"], 1)
            except Exception as exc:
                log.warning("metrics: broker unreadable: %s", type(exc).__name__)
                up.add_metric(["redis"], 0)
        yield up

    def _database(self) -> list[Metric]:
        now = utcnow()
        with self._sessions() as session:
            by_state = session.execute(
                select(
                    Document.tenant,
                    Document.status,
                    func.count(),
                    func.min(waiting_since()),  # a draft held for quota waits on purpose
                )
                .where(Document.is_current.is_(True))
                .group_by(Document.tenant, Document.status)
            ).all()
            calls = session.execute(
                select(CloudCall.interface, CloudCall.outcome, func.count()).group_by(
                    CloudCall.interface, CloudCall.outcome
                )
            ).all()
            refreshes = session.execute(
                select(CloudCall.tenant, func.count())
                .where(
                    CloudCall.interface == LOGIN_INTERFACE,
                    CloudCall.outcome == TOKEN_OK_OUTCOME,
                )
                .group_by(CloudCall.tenant)
            ).all()
            inbox = session.execute(
                select(CallbackInbox.state, func.count()).group_by(CallbackInbox.state)
            ).all()
            outbox = session.execute(
                select(ErpOutbox.state, func.count()).group_by(ErpOutbox.state)
            ).all()
            paused = {row.tenant: bool(row.paused) for row in session.scalars(select(TenantState))}
            nightly = latest_reports(session, trigger="beat")
            quotas = quota_rows(session)

        documents = GaugeMetricFamily(
            "fapiao_documents", "Current documents per state", labels=["state", "tenant"]
        )
        oldest = GaugeMetricFamily(
            "fapiao_documents_oldest_age_seconds",
            "Seconds the longest-waiting document has been in its state",
            labels=["state", "tenant"],
        )
        seen: dict[str, dict[str, tuple[int, Any]]] = {}
        for tenant, status, count, since in by_state:
            seen.setdefault(tenant, {})[status] = (int(count), since)
        tenants = set(self._tenant_names()) | set(seen)
        for tenant in sorted(tenants):
            for state in DocumentStatus:
                count, since = seen.get(tenant, {}).get(state.value, (0, None))
                documents.add_metric([state.value, tenant], count)
                if since is not None:
                    oldest.add_metric(
                        [state.value, tenant], max(0.0, (now - since).total_seconds())
                    )

        ledger = CounterMetricFamily(
            "fapiao_cloud_calls_recorded",
            "Calls to Kingdee recorded in the ledger, by interface and outcome",
            labels=["interface", "outcome"],
        )
        for interface, outcome, count in calls:
            ledger.add_metric([interface, outcome], int(count))
        tokens = CounterMetricFamily(
            "fapiao_token_refreshes_recorded",
            "Access tokens obtained (successful login.do calls in the ledger)",
            labels=["tenant"],
        )
        for tenant, count in refreshes:
            tokens.add_metric([tenant], int(count))

        inbox_family = GaugeMetricFamily(
            "fapiao_callback_inbox", "Stored callbacks per state", labels=["state"]
        )
        inbox_counts = {state: int(count) for state, count in inbox}
        for inbox_state in InboxState:
            inbox_family.add_metric([inbox_state.value], inbox_counts.get(inbox_state.value, 0))
        outbox_family = GaugeMetricFamily(
            "fapiao_erp_outbox", "ERP notifications per state", labels=["state"]
        )
        outbox_counts = {state: int(count) for state, count in outbox}
        for outbox_state in OutboxState:
            outbox_family.add_metric([outbox_state.value], outbox_counts.get(outbox_state.value, 0))
        paused_family = GaugeMetricFamily(
            "fapiao_tenant_paused", "1 while the tenant is paused", labels=["tenant"]
        )
        for tenant in sorted(set(self._tenant_names()) | set(paused)):
            paused_family.add_metric([tenant], 1 if paused.get(tenant) else 0)
        findings = GaugeMetricFamily(
            "fapiao_reconciliation_findings",
            "Findings of the newest nightly reconciliation report, by kind",
            labels=["tenant", "kind"],
        )
        last_run = GaugeMetricFamily(
            "fapiao_reconciliation_last_run_timestamp_seconds",
            "When the newest nightly reconciliation report finished (Unix time)",
            labels=["tenant"],
        )
        for report in nightly:
            tenant_label = report.tenant or "*"
            for kind, count in sorted((report.counts or {}).items()):
                findings.add_metric([tenant_label, kind], int(count))
            if report.finished_at is not None:
                last_run.add_metric([tenant_label], report.finished_at.timestamp())
        return [
            findings,
            last_run,
            documents,
            oldest,
            ledger,
            tokens,
            inbox_family,
            outbox_family,
            paused_family,
            *_quota_families(quotas, now),
        ]


def _quota_families(rows: list[TenantQuota], now: datetime) -> list[Metric]:
    """The credit quota per tenant and seller (``store.quota``); a surplus of an earlier
    Asia/Shanghai day (month) is not exported: it no longer counts."""
    labels = ["tenant", "seller"]
    day = GaugeMetricFamily(
        "fapiao_quota_day_surplus_yuan", "Credit quota left today, yuan", labels=labels
    )
    month = GaugeMetricFamily(
        "fapiao_quota_month_surplus_yuan", "Credit quota left this month, yuan", labels=labels
    )
    warning = GaugeMetricFamily(
        "fapiao_quota_is_warning", "1: the cloud's bizControl.isWarning today", labels=labels
    )
    held = GaugeMetricFamily(
        "fapiao_quota_held", "1 while pushes wait for credit quota", labels=labels
    )
    today = shanghai_day(now)
    for row in rows:
        key = [row.tenant, row.seller_tax_id]
        observed = shanghai_day(row.observed_at) if row.observed_at is not None else None
        if observed == today and row.day_surplus is not None:
            day.add_metric(key, float(row.day_surplus))  # Prometheus values are floats
        same_month = observed is not None and (observed.year, observed.month) == (
            today.year,
            today.month,
        )
        if same_month and row.month_surplus is not None:
            month.add_metric(key, float(row.month_surplus))
        warning.add_metric(key, 1 if observed == today and row.is_warning else 0)
        in_force = row.held and row.held_until is not None and row.held_until > now
        held.add_metric(key, 1 if in_force else 0)
    return [day, month, warning, held]


class BridgeMetrics:
    """The registry of one app, with the receiver's and the intake's own counters."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        tenant_names: Callable[[], Iterable[str]],
        queue_depth: Callable[[str], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        shared = os.environ.get(MULTIPROC_ENV)
        # Multiprocess: the counters write to files; the registry reads every process's.
        own: CollectorRegistry | None = None if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry, path=shared)  # type: ignore[no-untyped-call]
        self.callbacks = Counter(
            "fapiao_callbacks_received",
            "Callbacks received by the API, by result",
            ["result"],
            registry=own,
        )
        self.documents = Counter(
            "fapiao_documents_submitted",
            "Documents submitted to the API, by outcome",
            ["outcome"],
            registry=own,
        )
        for result in ("stored", "duplicate", "orphan", "refused", "unavailable"):
            self.callbacks.labels(result=result)
        self.registry.register(DatabaseCollector(sessions, tenant_names, queue_depth))

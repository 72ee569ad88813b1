"""The sweeper's age alert, for every state a document can be stuck in.

Non-terminal states come from the lifecycle table: a state the bridge itself moves on (an
exit to another state by an event that is not an operator's or the ERP's). Each needs a
``StuckAlertSettings`` age; a document older than it raises the alert (counter labelled with
the state, warning log line), a younger one does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import write_tenants_toml
from schemas.settings import StuckAlertSettings
from store.columns import utcnow
from store.lifecycle import TRANSITIONS
from store.models import Document
from store.states import DocumentStatus, Event
from worker.enqueue import RecordingEnqueuer
from worker.runtime import Runtime, build_runtime
from worker.services.sweep import sweep
from worker.testing import fast_settings

# Events an operator or the ERP causes, or a clerk in the cloud after issuance (作废/红冲:
# reversed_all); leaving a state only by these is waiting for people, nothing the bridge owes.
BY_PEOPLE = frozenset({Event.withdraw, Event.resubmit, Event.replay, Event.reversed_all})
NON_TERMINAL = sorted(
    {
        state
        for (state, event), target in TRANSITIONS.items()
        if target != state and event not in BY_PEOPLE
    },
    key=list(DocumentStatus).index,
)


def test_the_lifecycle_gives_the_expected_non_terminal_states() -> None:
    assert [s.value for s in NON_TERMINAL] == [
        "draft", "pushing", "in_doubt", "pushed", "partially_invoiced", "invoice_failed",
        "withdrawing",
    ]  # fmt: skip


def test_every_non_terminal_state_has_an_alert_age_and_no_terminal_one_does() -> None:
    ages = StuckAlertSettings()
    for state in DocumentStatus:
        age = ages.for_state(state.value)
        assert (age is not None) == (state in NON_TERMINAL), state


@pytest.fixture
def rt(
    session_factory: sessionmaker[Session], database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Runtime]:
    settings = fast_settings(
        database_url=database_url,
        redis_url=redis_url,
        tenants_file=write_tenants_toml(tmp_path / "tenants.toml"),
    )
    runtime = build_runtime(settings, enqueuer=RecordingEnqueuer(), sessions=session_factory)
    try:
        yield runtime
    finally:
        runtime.close()


def stuck_count(state: str) -> float:
    return REGISTRY.get_sample_value("fapiao_stuck_documents_total", {"status": state}) or 0.0


@pytest.mark.parametrize("state", NON_TERMINAL, ids=[s.value for s in NON_TERMINAL])
@pytest.mark.parametrize("older", [True, False], ids=["older", "younger"])
def test_the_sweeper_alerts_on_a_document_older_than_its_states_age(
    state: DocumentStatus,
    older: bool,
    rt: Runtime,
    make_document: Callable[..., Document],
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit = rt.settings.stuck_alert.for_state(state.value)
    assert limit is not None
    margin = timedelta(seconds=60)
    since = utcnow() - timedelta(seconds=limit) + (-margin if older else margin)
    columns: dict[str, Any] = {"status_changed_at": since, "created_at": since}
    if state is DocumentStatus.pushing:
        columns["lease_expires_at"] = utcnow() + timedelta(hours=1)  # a live lease: left alone
    make_document(status=state.value, **columns)
    before = stuck_count(state.value)

    with caplog.at_level(logging.WARNING, logger="worker.services.sweep"):
        report = sweep(rt)

    alerts = [
        r
        for r in caplog.records
        if r.getMessage() == "documents stuck in a state" and getattr(r, "status", None) == state
    ]
    if older:
        assert report.alerts == [state.value]
        assert stuck_count(state.value) == before + 1
        assert len(alerts) == 1
        assert getattr(alerts[0], "alert_after_seconds", None) == limit
        assert getattr(alerts[0], "age_seconds", 0) >= limit
    else:
        assert report.alerts == []
        assert stuck_count(state.value) == before
        assert alerts == []

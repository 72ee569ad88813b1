"""fapiao replay: --dry-run lists exactly the replayable documents and changes nothing; the
real run changes exactly those (database and event log), and never any other state."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from producers.cli import CliContext, app
from producers.testing import bridge_settings, build_test_components
from store.columns import utcnow
from store.models import Document, DocumentEvent
from store.states import DocumentStatus
from worker import queues
from worker.enqueue import RecordingEnqueuer

MakeDocument = Callable[..., Document]
Snapshot = dict[int, tuple[str, int, str | None]]


class Cli:
    def __init__(self, database_url: str, sessions: sessionmaker[Session]) -> None:
        self.settings = bridge_settings(database_url)
        self.enqueuer = RecordingEnqueuer()
        self.components = build_test_components(self.settings, sessions, enqueuer=self.enqueuer)
        self.sessions = sessions

    def __call__(self, *args: str, input: str | None = None) -> Result:
        context = CliContext(
            load_settings=lambda: self.settings, build_components=lambda _: self.components
        )
        return CliRunner().invoke(app, list(args), obj=context, input=input, env={"COLUMNS": "220"})

    def snapshot(self) -> Snapshot:
        with self.sessions() as session:
            return {
                d.id: (
                    d.status,
                    d.version,
                    d.next_attempt_at.isoformat() if d.next_attempt_at else None,
                )
                for d in session.scalars(select(Document))
            }

    def events(self) -> list[tuple[int, str, str, str | None]]:
        with self.sessions() as session:
            return [
                (e.document_id, e.event, e.actor, e.reason)
                for e in session.scalars(select(DocumentEvent).order_by(DocumentEvent.id))
            ]


@pytest.fixture
def cli(database_url: str, session_factory: sessionmaker[Session]) -> Cli:
    return Cli(database_url, session_factory)


@pytest.fixture
def seeded(make_document: MakeDocument) -> dict[str, Document]:
    """One current document in every state, two tenants, errors and ages that filters see."""
    old = utcnow() - timedelta(days=3)
    docs: dict[str, Document] = {}
    for state in DocumentStatus:
        docs[state.value] = make_document(status=state.value, tenant="demo", bill_no=f"S-{state}")
    docs["failed_shop"] = make_document(
        status="failed", tenant="shop", bill_no="S-failed-shop", last_error_code="-10005",
        last_error_message="销方税号未在发票云维护", status_changed_at=old,
    )  # fmt: skip
    docs["rejected_old"] = make_document(
        status="rejected", tenant="demo", bill_no="S-rejected-old", last_error_code="-10007",
        last_error_message="价税合计金额不对", status_changed_at=old,
    )  # fmt: skip
    # A superseded (not current) revision in failed is history, not work.
    docs["stale_revision"] = make_document(
        status="failed", tenant="demo", bill_no="S-superseded", is_current=False
    )
    return docs


REPLAYABLE_KEYS = ["failed", "rejected", "failed_shop", "rejected_old"]


def ids(docs: dict[str, Document], keys: list[str]) -> set[int]:
    return {docs[key].id for key in keys}


def test_dry_run_lists_exactly_the_replayable_documents_and_changes_nothing(
    cli: Cli, seeded: dict[str, Document]
) -> None:
    before, events_before = cli.snapshot(), cli.events()

    result = cli("replay", "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert listed["dry_run"] is True
    assert {item["document_id"] for item in listed["would_replay"]} == ids(seeded, REPLAYABLE_KEYS)
    assert cli.snapshot() == before
    assert cli.events() == events_before
    assert cli.enqueuer.sent == []


def test_dry_run_as_a_table_names_each_document(cli: Cli, seeded: dict[str, Document]) -> None:
    result = cli("replay", "--dry-run")

    assert result.exit_code == 0
    assert "would replay: 4 document(s)" in result.output
    for key in REPLAYABLE_KEYS:
        assert seeded[key].bill_no in result.output
    assert "S-in_doubt" not in result.output and "S-superseded" not in result.output


def test_the_real_run_changes_exactly_those_and_records_who_and_why(
    cli: Cli, seeded: dict[str, Document]
) -> None:
    before = cli.snapshot()
    events_before = len(cli.events())

    result = cli("replay", "--yes", "--json", "--actor", "operator:alice", "--reason", "fixed")

    assert result.exit_code == 0, result.output
    replayed = ids(seeded, REPLAYABLE_KEYS)
    after = cli.snapshot()
    for document_id, (status, version, _) in after.items():
        if document_id in replayed:
            assert status == "draft"
            assert version == before[document_id][1] + 1
        else:
            assert after[document_id] == before[document_id]
    new_events = cli.events()[events_before:]
    assert sorted(new_events) == sorted(
        (document_id, "replay", "operator:alice", "fixed") for document_id in replayed
    )
    assert {kw["document_id"] for kw in cli.enqueuer.of(queues.PUSH)} == replayed
    assert json.loads(result.output)["count"] == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--state", "failed"], ["failed", "failed_shop"]),
        (["--state", "rejected"], ["rejected", "rejected_old"]),
        (["--tenant", "shop"], ["failed_shop"]),
        (["--error-code", "-10007"], ["rejected_old"]),
        (["--bill", "S-failed", "--bill", "S-rejected"], ["failed", "rejected"]),
        (["--since", "1d"], ["failed", "rejected"]),
        (["--since", "2000-01-01"], REPLAYABLE_KEYS),
        (["--limit", "1"], ["failed_shop"]),  # the longest-waiting first
    ],
)
def test_filters_narrow_the_selection(
    cli: Cli, seeded: dict[str, Document], args: list[str], expected: list[str]
) -> None:
    before = cli.snapshot()

    result = cli("replay", "--yes", "--json", *args)

    assert result.exit_code == 0, result.output
    replayed = {item["document_id"] for item in json.loads(result.output)["replayed"]}
    assert replayed == ids(seeded, expected)
    changed = {i for i, row in cli.snapshot().items() if row != before[i]}
    assert changed == replayed


@pytest.mark.parametrize("state", ["in_doubt", "pushed", "invoiced", "draft"])
def test_no_filter_can_replay_another_state(
    cli: Cli, seeded: dict[str, Document], state: str
) -> None:
    before = cli.snapshot()

    by_state = cli("replay", "--yes", "--state", state)
    by_bill = cli("replay", "--yes", "--json", "--bill", f"S-{state}")

    assert by_state.exit_code == 2
    assert "only failed or rejected" in by_state.output
    assert json.loads(by_bill.output)["would_replay"] == []
    assert cli.snapshot() == before


def test_answering_no_replays_nothing(cli: Cli, seeded: dict[str, Document]) -> None:
    before = cli.snapshot()

    result = cli("replay", input="n\n")

    assert result.exit_code == 1
    assert "Replay 4 document(s)?" in result.output
    assert cli.snapshot() == before
    assert cli.enqueuer.sent == []


def test_answering_yes_replays(cli: Cli, seeded: dict[str, Document]) -> None:
    result = cli("replay", "--state", "failed", "--tenant", "shop", input="y\n")

    assert result.exit_code == 0, result.output
    assert "replayed 1 document(s)" in result.output
    with cli.sessions() as session:
        document = session.get(Document, seeded["failed_shop"].id)
        assert document is not None and document.status == "draft"


def test_a_bad_since_is_a_usage_error(cli: Cli, seeded: dict[str, Document]) -> None:
    result = cli("replay", "--since", "yesterday-ish")
    assert result.exit_code == 2
    assert "neither a duration" in result.output

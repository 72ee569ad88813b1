"""fapiao db purge / store.purge: export exactly what goes, delete it in batches, keep the rest."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import bridge_settings, build_test_components, run_cli
from store.columns import utcnow
from store.db import make_engine
from store.models import CallbackInbox, CloudCall, Document, DocumentEvent, ErpOutbox, Invoice
from store.purge import count_doomed, purge

MakeDocument = Callable[..., Document]
OLD = timedelta(days=120)
NEW = timedelta(days=2)


class Planted:
    """Rows of each table, by label; ``doomed`` are those a 90-day purge must delete."""

    def __init__(self) -> None:
        self.ids: dict[str, dict[str, int]] = {
            "callback_inbox": {},
            "cloud_calls": {},
            "erp_outbox": {},
        }
        self.doomed: dict[str, set[int]] = {name: set() for name in self.ids}

    def add(self, table: str, label: str, row_id: int, *, doomed: bool) -> None:
        self.ids[table][label] = row_id
        if doomed:
            self.doomed[table].add(row_id)

    def survivors(self, table: str) -> set[int]:
        return set(self.ids[table].values()) - self.doomed[table]


@pytest.fixture
def planted(session_factory: sessionmaker[Session], make_document: MakeDocument) -> Planted:
    now = utcnow()
    old, new = now - OLD, now - NEW
    done = make_document(status="invoiced")
    live = make_document(status="pushed")  # still polled: its history stays however old
    plant = Planted()
    with session_factory() as session:

        def inbox(label: str, state: str, at: datetime, doc: Document | None, doomed: bool) -> None:
            row = CallbackInbox(
                received_at=at,
                dedupe_key=f"key-{label}",
                raw_body=b'{"data":"\xe5\x8f\x91\xe7\xa5\xa8"}' + label.encode(),
                state=state,
                processed_at=None if state == "received" else at,
                document_id=doc.id if doc else None,
            )
            session.add(row)
            session.flush()
            plant.add("callback_inbox", label, row.id, doomed=doomed)

        inbox("old-processed", "processed", old, done, True)
        inbox("old-processed-unlinked", "processed", old, None, True)
        inbox("new-processed", "processed", new, done, False)
        inbox("old-received", "received", old, done, False)  # unsettled: reconcile owed
        inbox("old-orphan", "orphan", old, None, False)
        inbox("old-failed", "failed", old, done, False)
        inbox("old-processed-live", "processed", old, live, False)

        def call(label: str, at: datetime, doc: Document | None, doomed: bool) -> None:
            row = CloudCall(
                tenant="acme",
                interface="BILL.PUSH" if doc else "login",
                outcome="ok",
                document_id=doc.id if doc else None,
                attempt=1,
                http_status=200,
                message="access_token=abc123 ok",
                created_at=at,
            )
            session.add(row)
            session.flush()
            plant.add("cloud_calls", label, row.id, doomed=doomed)

        call("old-done", old, done, True)
        call("old-token", old, None, True)
        call("new-done", new, done, False)
        call("old-live", old, live, False)  # the in-doubt resolver may read it

        def outbox(label: str, state: str, at: datetime, doc: Document, doomed: bool) -> None:
            row = ErpOutbox(
                document_id=doc.id,
                event="invoiced",
                payload={"billNo": doc.bill_no, "amount": "113.00"},
                state=state,
                attempts=1,
                next_attempt_at=None if state != "pending" else at,
                created_at=at,
                delivered_at=at if state == "delivered" else None,
            )
            session.add(row)
            session.flush()
            plant.add("erp_outbox", label, row.id, doomed=doomed)

        outbox("old-delivered", "delivered", old, done, True)
        outbox("new-delivered", "delivered", new, done, False)
        outbox("old-pending", "pending", old, done, False)  # undelivered: still owed
        outbox("old-parked", "parked", old, done, False)  # an operator must look
        outbox("old-delivered-live", "delivered", old, live, False)
        session.add(
            DocumentEvent(
                document_id=done.id, to_status="invoiced", event="issued_all", actor="t",
                created_at=old,
            )
        )  # fmt: skip
        session.add(
            Invoice(document_id=done.id, invoice_num="24330000000000000001", created_at=old)
        )
        session.commit()
    return plant


def remaining(session_factory: sessionmaker[Session]) -> dict[str, set[int]]:
    with session_factory() as session:
        return {
            "callback_inbox": set(session.scalars(select(CallbackInbox.id))),
            "cloud_calls": set(session.scalars(select(CloudCall.id))),
            "erp_outbox": set(session.scalars(select(ErpOutbox.id))),
        }


def exported(directory: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.iterdir()):
        assert path.name.endswith(".jsonl.gz"), path  # no .partial left behind
        table = path.name.split("-")[0]
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            found[table] = [json.loads(line) for line in lines]
    return found


@pytest.fixture
def cli(database_url: str, session_factory: sessionmaker[Session]) -> Callable[..., Any]:
    components = build_test_components(bridge_settings(database_url), session_factory)
    return lambda *args, **kw: run_cli(components, *args, **kw)


def test_purge_exports_exactly_the_deleted_rows_and_keeps_the_rest(
    cli: Callable[..., Any],
    planted: Planted,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    before = remaining(session_factory)
    export_dir = tmp_path / "export"

    result = cli(
        "db", "purge", "--older-than", "90d", "--export", str(export_dir), "--yes", "--json"
    )

    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    by_table = {item["table"]: item for item in body["tables"]}
    after = remaining(session_factory)
    files = exported(export_dir)
    for table in ("callback_inbox", "cloud_calls", "erp_outbox"):
        assert before[table] - after[table] == planted.doomed[table], table
        assert after[table] == planted.survivors(table), table
        assert {row["id"] for row in files[table]} == planted.doomed[table], table
        assert by_table[table]["deleted"] == len(planted.doomed[table])
        assert by_table[table]["kept"] == 0
        assert Path(by_table[table]["export_file"]).parent == export_dir
    # The export is the row: columns by name, timestamps ISO, the raw body byte-exact.
    callback = next(r for r in files["callback_inbox"] if r["dedupe_key"] == "key-old-processed")
    assert (
        base64.b64decode(callback["raw_body"])
        == b'{"data":"\xe5\x8f\x91\xe7\xa5\xa8"}old-processed'
    )
    assert callback["state"] == "processed"
    assert datetime.fromisoformat(callback["received_at"]) < utcnow() - timedelta(days=90)
    notification = files["erp_outbox"][0]
    assert notification["payload"] == {
        "billNo": notification["payload"]["billNo"],
        "amount": "113.00",
    }
    assert {r["message"] for r in files["cloud_calls"]} == {"access_token=*** ok"}
    with session_factory() as session:  # the record is never touched
        assert len(session.scalars(select(Document)).all()) == 2
        assert len(session.scalars(select(DocumentEvent)).all()) == 1
        assert len(session.scalars(select(Invoice)).all()) == 1

    again = cli("db", "purge", "--older-than", "90d", "--export", str(tmp_path / "e2"), "--yes")
    assert again.exit_code == 0, again.output
    assert "nothing to delete" in again.output
    assert remaining(session_factory) == after


def test_dry_run_counts_and_changes_nothing(
    cli: Callable[..., Any], planted: Planted, session_factory: sessionmaker[Session]
) -> None:
    before = remaining(session_factory)

    result = cli("db", "purge", "--older-than", "90d", "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["would_delete"] == {table: len(ids) for table, ids in planted.doomed.items()}
    assert remaining(session_factory) == before
    table_run = cli("db", "purge", "--older-than", "90d", "--dry-run")
    assert "would delete" in table_run.output and "cloud_calls 2" in table_run.output
    assert remaining(session_factory) == before


def test_a_longer_retention_keeps_everything(
    cli: Callable[..., Any], planted: Planted, session_factory: sessionmaker[Session]
) -> None:
    before = remaining(session_factory)
    result = cli("db", "purge", "--older-than", "200d", "--no-export", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"] == 0
    assert remaining(session_factory) == before


def test_export_or_no_export_must_be_chosen_and_durations_are_checked(
    cli: Callable[..., Any],
    planted: Planted,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    before = remaining(session_factory)
    neither = cli("db", "purge", "--older-than", "90d", "--yes")
    both = cli(
        "db", "purge", "--older-than", "90d", "--yes", "--no-export", "--export", str(tmp_path)
    )
    bad = cli("db", "purge", "--older-than", "ninety days", "--no-export", "--yes")
    future = cli("db", "purge", "--older-than", "2999-01-01", "--no-export", "--yes")
    for result in (neither, both, bad, future):
        assert result.exit_code == 2, result.output
    assert "--no-export" in neither.output
    assert "--older-than" in bad.output
    assert remaining(session_factory) == before


def test_answering_no_deletes_nothing(
    cli: Callable[..., Any], planted: Planted, session_factory: sessionmaker[Session]
) -> None:
    before = remaining(session_factory)
    result = cli("db", "purge", "--older-than", "90d", "--no-export", input="n\n")
    assert result.exit_code == 1
    assert remaining(session_factory) == before


def test_no_export_deletes_in_small_batches(
    cli: Callable[..., Any], planted: Planted, session_factory: sessionmaker[Session]
) -> None:
    result = cli(
        "db", "purge", "--older-than", "90d", "--no-export", "--batch-size", "1", "--yes", "--json"
    )
    assert result.exit_code == 0, result.output
    assert all(item["export_file"] is None for item in json.loads(result.output)["tables"])
    after = remaining(session_factory)
    for table in planted.ids:
        assert after[table] == planted.survivors(table)


def test_a_row_that_stops_qualifying_after_the_export_is_kept(
    database_url: str, planted: Planted, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A document replayed between the snapshot and the DELETE keeps its history."""
    engine = make_engine(database_url, sqlite_begin="DEFERRED")
    cutoff = utcnow() - timedelta(days=90)
    done_call = planted.ids["cloud_calls"]["old-done"]

    def revive_on_first_batch(table: str, _done: int) -> None:
        # Called after the first batch of a table has been deleted: bring the document of the
        # not-yet-deleted cloud call back to life, as a replay would.
        if table == "callback_inbox":
            with session_factory() as session:
                document_id = session.scalar(
                    select(CloudCall.document_id).where(CloudCall.id == done_call)
                )
                session.execute(
                    update(Document).where(Document.id == document_id).values(status="draft")
                )
                session.commit()

    try:
        report = purge(
            engine, cutoff, export_dir=tmp_path, batch_size=1, progress=revive_on_first_batch
        )
    finally:
        engine.dispose()
    calls = next(r for r in report if r.table == "cloud_calls")
    assert (calls.exported, calls.deleted, calls.kept) == (2, 1, 1)
    assert done_call in remaining(session_factory)["cloud_calls"]
    assert {row["id"] for row in exported(tmp_path)["cloud_calls"]} == planted.doomed["cloud_calls"]


def test_count_doomed_matches_the_plan(engine: Engine, planted: Planted) -> None:
    counts = count_doomed(engine, utcnow() - timedelta(days=90))
    assert counts == {table: len(ids) for table, ids in planted.doomed.items()}

"""The Alembic migrations build the schema the models describe, on PostgreSQL and SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from store import migrate
from store.db import make_engine
from store.models import metadata

REPO = Path(__file__).resolve().parents[2]
TABLES = {
    "documents",
    "document_events",
    "invoices",
    "invoice_documents",
    "cloud_calls",
    "callback_inbox",
    "erp_outbox",
    "tenant_state",
    "tenant_quota",
}
PARTIAL_INDEXES = {
    "uq_documents_current": "is_current",
    "ix_documents_poll_due": "in_doubt",
    "ix_documents_attempt_due": "withdrawing",
    "ix_documents_lease": "pushing",
    "ix_callback_inbox_received": "received",
    "ix_erp_outbox_due": "pending",
}


@pytest.fixture
def empty_database_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """A brand-new empty database of the configured kind, dropped afterwards."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server = os.environ["FAPIAO_TEST_DATABASE_URL"]
    name = f"fapiao_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


def differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_upgrade_an_empty_database_to_head_matches_the_models(empty_database_url: str) -> None:
    assert migrate.current(empty_database_url) is None
    migrate.upgrade(empty_database_url)
    assert migrate.current(empty_database_url) == migrate.head()
    engine = make_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_the_session_database_also_matches(engine: Engine, database_url: str) -> None:
    # The suite's own database was built by the migrations (conftest): same check there.
    assert migrate.current(database_url) == migrate.head()
    assert differences(engine) == []


def test_the_comparison_would_notice_a_difference(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_documents_bill_no"))
        found = differences(engine)
        assert any("ix_documents_bill_no" in repr(diff) for diff in found), found
    finally:
        engine.dispose()


def test_partial_indexes_exist_with_their_predicates(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                rows = conn.execute(
                    text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
                ).all()
            else:
                rows = conn.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
                ).all()
        definitions = {name: sql or "" for name, sql in rows}
        for name, word in PARTIAL_INDEXES.items():
            assert "WHERE" in definitions[name].upper(), name
            assert word in definitions[name], name
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    migrate.downgrade(empty_database_url, "base")
    engine = make_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) & TABLES == set()
        migrate.upgrade(empty_database_url)
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_invoices_recorded_before_0002_are_linked_to_their_document(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0001")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            for bill_no in ("OLD-1", "OLD-2"):
                conn.execute(
                    text(
                        "INSERT INTO documents (tenant, seller_tax_id, bill_no, content_hash,"
                        " status, total_amount, issued_amount, payload, created_at, updated_at,"
                        " status_changed_at) VALUES ('acme', 'S1', :bill_no, :bill_no,"
                        " 'invoiced', 113, 113, '{}', :now, :now, :now)"
                    ),
                    {"bill_no": bill_no, "now": "2026-11-30 10:00:00+00:00"},
                )
            ids = conn.execute(text("SELECT id FROM documents ORDER BY id")).scalars().all()
            for number, document_id in enumerate(ids, start=1):
                conn.execute(
                    text(
                        "INSERT INTO invoices (document_id, invoice_num, created_at, updated_at)"
                        " VALUES (:document_id, :num, :now, :now)"
                    ),
                    {"document_id": document_id, "num": f"N{number}", "now": "2026-11-30"},
                )
        migrate.upgrade(empty_database_url)
        with engine.connect() as conn:
            links = conn.execute(
                text(
                    "SELECT l.document_id, i.document_id FROM invoice_documents l"
                    " JOIN invoices i ON i.id = l.invoice_id ORDER BY l.document_id"
                )
            ).all()
        assert [tuple(row) for row in links] == [(ids[0], ids[0]), (ids[1], ids[1])]
        migrate.downgrade(empty_database_url, "0001")
        assert "invoice_documents" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_always_migrates_cleanly(tmp_path: Path) -> None:
    # Whatever the configured backend, the embedded default must migrate too.
    url = f"sqlite:///{tmp_path / 'always.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        assert differences(engine) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["env", "x-argument"])
def test_alembic_command_line_reads_the_url(tmp_path: Path, how: str) -> None:
    target = tmp_path / f"{how}.db"
    env = {**os.environ, "FAPIAO_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}"}
    command = [sys.executable, "-m", "alembic", "upgrade", "head"]
    if how == "env":
        env["FAPIAO_DATABASE_URL"] = f"sqlite:///{target}"
    else:
        command[3:3] = ["-x", f"url=sqlite:///{target}"]
    completed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert migrate.current(f"sqlite:///{target}") == migrate.head()
    assert not (tmp_path / "unused.db").exists() or how == "env"

"""Retention: export, then delete, old rows that nothing needs any more (``fapiao db purge``).

| table            | a row goes when (all of)                            | it stays when         |
|------------------|-----------------------------------------------------|-----------------------|
| `callback_inbox` | `state = 'processed'`, `processed_at` before cutoff | `received` (reconcile |
|                  |                                                     | owed), `orphan` or    |
|                  |                                                     | `failed` (evidence)   |
| `cloud_calls`    | `created_at` before cutoff                          |                       |
| `erp_outbox`     | `state = 'delivered'`, `delivered_at` before cutoff | `pending`, `parked`   |

…and, for every table, the row's document (if any) is not live (`LIVE_STATUSES`: a state in
which workers still act on it). The in-doubt resolver reads the current attempt's BILL.PUSH
ledger row, so a live document keeps its whole history however old. Documents, their events,
invoices and tenant state are never deleted: they are the record.

How a run goes (``purge``):

1. One consistent snapshot (PostgreSQL: a READ ONLY, REPEATABLE READ transaction; SQLite: one
   read transaction, which in WAL mode is a snapshot that does not block writers when the
   engine begins transactions DEFERRED: ``make_engine(url, sqlite_begin="DEFERRED")``, as
   ``fapiao db purge`` does) streams every doomed row of each table, ordered by
   id, into ``<table>-<stamp>.jsonl.gz`` in the export directory, and remembers the ids. A
   file is written as ``….partial``, flushed to disk, then renamed: a complete name means a
   complete file. Nothing is deleted before every file is complete.
2. The remembered ids are deleted ``batch_size`` at a time, one short transaction per batch,
   so a large table is never locked for long. Each DELETE re-checks the conditions: a row
   that stopped qualifying after the snapshot (its document was replayed meanwhile) is kept
   and counted as ``kept``; rows that started qualifying after the snapshot wait for the
   next run. Hence deleted ⊆ exported, and exported = deleted + kept.

Export format: JSON Lines, one object per row with the table's column names; timestamps ISO
8601 UTC, `callback_inbox.raw_body` base64 (the body exactly as received), JSON columns as
JSON. ``count_doomed`` answers a dry run (counts, same conditions, changes nothing).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, Connection, Engine, Table, and_, delete, func, not_, select

from store.columns import utcnow
from store.db import is_postgres
from store.models import CallbackInbox, CloudCall, Document, ErpOutbox
from store.states import DocumentStatus, InboxState, OutboxState

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LIVE_STATUSES",
    "PURGED_TABLES",
    "TablePurge",
    "count_doomed",
    "doomed_condition",
    "purge",
]

DEFAULT_BATCH_SIZE: Final = 5000
_STREAM_CHUNK: Final = 1000

# States in which workers still push, poll, resolve or withdraw the document.
LIVE_STATUSES: Final[tuple[DocumentStatus, ...]] = (
    DocumentStatus.draft,
    DocumentStatus.pushing,
    DocumentStatus.in_doubt,
    DocumentStatus.pushed,
    DocumentStatus.partially_invoiced,
    DocumentStatus.invoice_failed,
    DocumentStatus.withdrawing,
)

_documents = cast("Table", Document.__table__)
_inbox = cast("Table", CallbackInbox.__table__)
_calls = cast("Table", CloudCall.__table__)
_outbox = cast("Table", ErpOutbox.__table__)
_TABLES: Final = {"callback_inbox": _inbox, "cloud_calls": _calls, "erp_outbox": _outbox}
PURGED_TABLES: Final[tuple[str, ...]] = tuple(_TABLES)


def _not_live(table: Table) -> ColumnElement[bool]:
    live = (
        select(_documents.c.id)
        .where(
            _documents.c.id == table.c.document_id,
            _documents.c.status.in_([s.value for s in LIVE_STATUSES]),
        )
        .exists()
    )
    return not_(live)


def doomed_condition(table_name: str, cutoff: datetime) -> ColumnElement[bool]:
    """The WHERE clause of the rows of ``table_name`` a purge at ``cutoff`` deletes."""
    if table_name == "callback_inbox":
        return and_(
            _inbox.c.state == InboxState.processed.value,
            _inbox.c.processed_at < cutoff,
            _not_live(_inbox),
        )
    if table_name == "cloud_calls":
        return and_(_calls.c.created_at < cutoff, _not_live(_calls))
    if table_name == "erp_outbox":
        return and_(
            _outbox.c.state == OutboxState.delivered.value,
            _outbox.c.delivered_at < cutoff,
            _not_live(_outbox),
        )
    raise ValueError(f"{table_name!r} is not purged; only {', '.join(PURGED_TABLES)}")


@dataclass(frozen=True, slots=True)
class TablePurge:
    """What a purge did to one table (``exported`` = ``deleted`` + ``kept``)."""

    table: str
    exported: int  # rows that qualified in the snapshot (written to ``export_file`` if any)
    deleted: int
    kept: int  # qualified in the snapshot, no longer at delete time: not deleted
    export_file: Path | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "matched": self.exported,
            "deleted": self.deleted,
            "kept": self.kept,
            "export_file": str(self.export_file) if self.export_file else None,
        }


def _snapshot(engine: Engine) -> Connection:
    if is_postgres(engine):
        return engine.connect().execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
    return engine.connect()


def count_doomed(engine: Engine, cutoff: datetime) -> dict[str, int]:
    """Rows per table a purge at ``cutoff`` would delete now (one snapshot; changes nothing)."""
    with _snapshot(engine) as connection, connection.begin():
        return {
            name: int(
                connection.scalar(
                    select(func.count()).select_from(table).where(doomed_condition(name, cutoff))
                )
                or 0
            )
            for name, table in _TABLES.items()
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot export {type(value).__name__}")


_ENCODER: Final = json.JSONEncoder(default=_jsonable, ensure_ascii=False, sort_keys=True)


def _encode(row: dict[str, Any]) -> str:
    return _ENCODER.encode(row) + "\n"


def _stream(connection: Connection, name: str, cutoff: datetime) -> Iterable[dict[str, Any]]:
    table = _TABLES[name]
    result = connection.execution_options(stream_results=True, yield_per=_STREAM_CHUNK).execute(
        select(table).where(doomed_condition(name, cutoff)).order_by(table.c.id)
    )
    for row in result.mappings():
        yield dict(row)


def _export(rows: Iterable[dict[str, Any]], path: Path, ids: array[int]) -> None:
    if path.exists():
        raise FileExistsError(f"{path} exists already; refusing to overwrite an export")
    partial = path.with_name(path.name + ".partial")
    try:
        # Level 6 (not gzip's default 9): nearly the same size at a fraction of the CPU.
        with (
            open(partial, "xb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as out,
        ):
            lines: list[str] = []
            for row in rows:
                ids.append(int(row["id"]))
                lines.append(_encode(row))
                if len(lines) >= _STREAM_CHUNK:
                    out.write("".join(lines).encode("utf-8"))
                    lines.clear()
            out.write("".join(lines).encode("utf-8"))
            out.close()  # writes the gzip trailer before the fsync below
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def purge(
    engine: Engine,
    cutoff: datetime,
    *,
    export_dir: Path | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> list[TablePurge]:
    """Export (unless ``export_dir`` is None) then delete the doomed rows (module docstring).

    ``progress(table, rows_deleted)`` is called after every batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    stamp = (now or utcnow()).strftime("%Y%m%dT%H%M%SZ")
    files: dict[str, Path | None] = {}
    ids: dict[str, array[int]] = {}
    if export_dir is not None:
        export_dir.mkdir(parents=True, exist_ok=True)
    with _snapshot(engine) as connection, connection.begin():
        for name in _TABLES:
            ids[name] = array("q")
            rows = _stream(connection, name, cutoff)
            if export_dir is None:
                files[name] = None
                ids[name].extend(int(row["id"]) for row in rows)
                continue
            path = export_dir / f"{name}-{stamp}.jsonl.gz"
            _export(rows, path, ids[name])
            files[name] = path

    report: list[TablePurge] = []
    for name, table in _TABLES.items():
        wanted = ids[name]
        deleted = 0
        for start in range(0, len(wanted), batch_size):
            chunk = list(wanted[start : start + batch_size])
            with engine.begin() as connection:
                result = connection.execute(
                    delete(table).where(table.c.id.in_(chunk), doomed_condition(name, cutoff))
                )
            deleted += int(result.rowcount)
            if progress is not None:
                progress(name, len(chunk))
        report.append(TablePurge(name, len(wanted), deleted, len(wanted) - deleted, files[name]))
    return report

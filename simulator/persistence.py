"""``--state-file``: bills, invoices and statistics kept in SQLite (stdlib ``sqlite3``).

| table | row |
|---|---|
| ``bills`` | one bill generation: ``id``, key columns for humans, ``body`` (JSON of ``SimBill``) |
| ``meta`` | ``key`` → JSON: ``stats``, ``numbers``, ``violations``, ``callback_urls`` |

Bills are written through on every change (one small transaction); ``meta`` is written by a
periodic flush and at shutdown. Exact decimals survive: JSON is written with ``dumps_exact``
and read with ``loads_exact``. Tokens are not kept: a restarted cloud forgets sessions, which
is what clients must survive anyway.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from schemas.money import dumps_exact, loads_exact
from simulator.bills import SimBill

__all__ = ["StateFile"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bills (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    seller_tax_id TEXT NOT NULL,
    bill_no TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
"""


class StateFile:
    """One SQLite file; used only from the event-loop thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def save_bill(self, bill: SimBill) -> None:
        self._db.execute(
            "INSERT INTO bills (id, tenant, seller_tax_id, bill_no, state, body)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET state = excluded.state, body = excluded.body",
            (
                bill.id,
                bill.tenant,
                bill.seller_tax_id,
                bill.bill_no,
                bill.state.value,
                dumps_exact(bill.to_json()),
            ),
        )

    def load_bills(self) -> list[SimBill]:
        rows = self._db.execute("SELECT body FROM bills ORDER BY id").fetchall()
        return [SimBill.from_json(loads_exact(body)) for (body,) in rows]

    def save_meta(self, values: dict[str, Any]) -> None:
        self._db.execute("BEGIN")
        try:
            for key, value in values.items():
                self._db.execute(
                    "INSERT INTO meta (key, body) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET body = excluded.body",
                    (key, dumps_exact(value)),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def load_meta(self) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, body FROM meta").fetchall()
        return {key: loads_exact(body) for key, body in rows}

    def clear(self) -> None:
        self._db.execute("DELETE FROM bills")
        self._db.execute("DELETE FROM meta")

    def close(self) -> None:
        self._db.close()

"""bench.fuzz's judge: a refused request that changed a row, or any 5xx, is a failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bench.fuzz import Fuzzer, state_fingerprint
from store.db import unit_of_work
from store.models import CallbackInbox


class _Stack:
    """The two things Fuzzer needs from a running stack."""

    api_url = "http://127.0.0.1:9"

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url)


def _answer(status: int, body: Any = None) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(status, json=body if body is not None else {})


def _store_callback(sessions: sessionmaker[Session], key: str) -> None:
    with unit_of_work(sessions) as session:
        session.add(CallbackInbox(dedupe_key=key, raw_body=b"{}"))


def test_refused_input_that_changes_state_is_reported(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    fuzzer = Fuzzer(_Stack(), engine)  # type: ignore[arg-type]
    try:
        # Refused and nothing changed: fine.
        fuzzer.send("callbacks", _answer(400), "bad body")
        assert fuzzer.failures == []
        assert fuzzer.refused == 1

        # Refused, yet a row appeared: the broken world the fuzzer exists to catch.
        def refused_but_stored() -> httpx.Response:
            _store_callback(session_factory, "leaked")
            return httpx.Response(400, json={})

        fuzzer.send("callbacks", refused_but_stored, "bad body that was stored")
        assert len(fuzzer.failures) == 1
        assert "changed state" in fuzzer.failures[0]

        # Accepted input may add rows.
        def accepted_and_stored() -> httpx.Response:
            _store_callback(session_factory, "fine")
            return httpx.Response(200, json={})

        fuzzer.send("callbacks", accepted_and_stored, "good body")
        assert len(fuzzer.failures) == 1
        assert fuzzer.accepted == 1

        # A batch whose every item was refused counts as refused input.
        batch = {"results": [{"status_code": 422}, {"status_code": 422}]}
        fuzzer.send("documents", _answer(207, batch), "two bad documents")
        assert fuzzer.refused == 3

        fuzzer.send("documents", _answer(500), "crash")
        assert len(fuzzer.failures) == 2
        assert "HTTP 500" in fuzzer.failures[1]
    finally:
        fuzzer.close()


def test_the_fingerprint_moves_with_every_written_table(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    before = state_fingerprint(engine)
    _store_callback(session_factory, "one")
    after = state_fingerprint(engine)
    assert before != after
    assert after[4:6] == (before[4] + 1, after[5])  # callback_inbox count went up by one

"""How owed pushes become messages (``worker.queues.push_messages``) and the batch settings."""

from __future__ import annotations

import pytest

from schemas.settings import PushSettings, Settings, SettingsError
from worker import queues


def test_chunks_of_batch_size_and_a_lone_document_as_a_plain_push() -> None:
    pushes = [(i, f"B-{i}", "demo" if i % 2 else "shop") for i in range(1, 6)]
    assert queues.push_messages(pushes, 2) == [
        (queues.PUSH_BATCH,
         {"document_ids": [1, 2], "bill_nos": ["B-1", "B-2"], "tenants": ["demo", "shop"]}),
        (queues.PUSH_BATCH,
         {"document_ids": [3, 4], "bill_nos": ["B-3", "B-4"], "tenants": ["demo", "shop"]}),
        (queues.PUSH, {"document_id": 5, "bill_no": "B-5", "tenant": "demo"}),
    ]  # fmt: skip
    assert queues.push_messages(pushes, 1) == [
        (queues.PUSH, {"document_id": i, "bill_no": f"B-{i}", "tenant": t}) for i, _, t in pushes
    ]
    assert [task for task, _ in queues.push_messages(pushes, 20)] == [queues.PUSH_BATCH]
    assert queues.push_messages([], 20) == []


def test_the_batch_task_runs_on_the_push_queue() -> None:
    assert queues.ROUTES[queues.PUSH_BATCH] == "push"


def test_batch_settings_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (PushSettings().batch_size, PushSettings().batch_concurrency) == (20, 8)
    monkeypatch.setenv("FAPIAO_ENVIRONMENT", "development")
    monkeypatch.setenv("FAPIAO_PUSH__BATCH_SIZE", "50")
    monkeypatch.setenv("FAPIAO_PUSH__BATCH_CONCURRENCY", "4")
    settings = Settings.load()
    assert (settings.push.batch_size, settings.push.batch_concurrency) == (50, 4)
    monkeypatch.setenv("FAPIAO_PUSH__BATCH_CONCURRENCY", "0")
    with pytest.raises(SettingsError, match="FAPIAO_PUSH__BATCH_CONCURRENCY"):
        Settings.load()

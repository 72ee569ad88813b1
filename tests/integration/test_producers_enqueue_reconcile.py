"""The receiver's reconcile enqueue on a real Redis: message + task-sent event, one pipeline.

| case | expected |
|---|---|
| Redis up | the message in ``callbacks`` (ids + labels) and its ``task-sent`` event, 1 round trip |
| the pipelined send fails | sent again through ``worker.enqueue`` (retries): still one message |
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, cast

import pytest
import redis

from producers.enqueue import CeleryEnqueuer, producer_celery_app
from producers.testing import bridge_settings


def _queued(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    decoded = []
    for item in reversed(cast(list[bytes], client.lrange(queue, 0, -1))):
        envelope = json.loads(item)
        body = json.loads(base64.b64decode(envelope["body"]))
        decoded.append({"id": envelope["headers"]["id"], "task": envelope["headers"]["task"],
                        "kwargs": body[1]})  # fmt: skip
    return decoded


def _events(pubsub: Any, want: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < want and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is None:
            continue
        envelope = json.loads(message["data"])
        events.append(json.loads(base64.b64decode(envelope["body"])))
    return events


@pytest.fixture
def broker(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.psubscribe("*celeryev*")
    pubsub.get_message(timeout=1.0)  # the psubscribe confirmation
    try:
        yield client, pubsub
    finally:
        pubsub.close()
        client.close()


def _spy_on_redis(monkeypatch: pytest.MonkeyPatch) -> tuple[list[list[str]], list[str]]:
    """(commands of each executed pipeline, commands sent one by one)."""
    pipelines: list[list[str]] = []
    singles: list[str] = []
    execute = redis.client.Pipeline.execute
    execute_command = redis.Redis.execute_command

    def spy_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        pipelines.append([str(command[0][0]).upper() for command in self.command_stack])
        return execute(self, *args, **kwargs)

    def spy_execute_command(self: Any, *args: Any, **options: Any) -> Any:
        if not isinstance(self, redis.client.Pipeline):
            singles.append(str(args[0]).upper())
        return execute_command(self, *args, **options)

    monkeypatch.setattr(redis.client.Pipeline, "execute", spy_execute)
    monkeypatch.setattr(redis.Redis, "execute_command", spy_execute_command)
    return pipelines, singles


def test_reconcile_sends_its_message_and_task_sent_event_in_one_pipeline(
    redis_url: str, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, pubsub = broker
    app = producer_celery_app(bridge_settings("sqlite://", broker_url=redis_url))
    enqueuer = CeleryEnqueuer(app)
    assert enqueuer.reconcile(40) is True  # the first send also declares the queue binding
    _events(pubsub, 1)
    client.delete("callbacks")
    pipelines, singles = _spy_on_redis(monkeypatch)

    assert enqueuer.reconcile(41, bill_no="B-41", tenant="demo") is True

    assert (pipelines, singles) == ([["LPUSH", "PUBLISH"]], [])
    monkeypatch.undo()
    [message] = _queued(client, "callbacks")
    assert message["task"] == "fapiao.reconcile"
    assert message["kwargs"] == {"inbox_id": 41, "bill_no": "B-41", "tenant": "demo"}
    [event] = _events(pubsub, 1)
    assert (event["type"], event["uuid"], event["name"], event["queue"]) == (
        "task-sent",
        message["id"],
        "fapiao.reconcile",
        "callbacks",
    )


def test_a_failed_pipeline_is_sent_again_with_retries(
    redis_url: str, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, pubsub = broker
    app = producer_celery_app(bridge_settings("sqlite://", broker_url=redis_url))
    enqueuer = CeleryEnqueuer(app)

    def broken(task: str, kwargs: dict[str, Any]) -> None:
        raise redis.ConnectionError("connection reset")

    monkeypatch.setattr(enqueuer, "_send_pipelined", broken)

    assert enqueuer.reconcile(43, bill_no="B-43") is True

    [message] = _queued(client, "callbacks")
    assert message["kwargs"] == {"inbox_id": 43, "bill_no": "B-43"}
    assert [e["uuid"] for e in _events(pubsub, 1)] == [message["id"]]

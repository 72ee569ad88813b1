"""``CeleryEnqueuer`` on a real Redis: messages + task-sent events in one pipeline.

| case | expected |
|---|---|
| one reconcile (the receiver) | the message in ``callbacks`` (ids + labels) and its ``task-sent`` |
|                              | event, 1 round trip |
| a batch of mixed messages | every message in its queue, in order, with its event: 1 round trip |
| the pipelined send fails | sent again one by one with the publish retry: still one message |
| the broker is down | 0 sent, nothing raised; the fallback stops at the first refusal |
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, cast

import pytest
import redis

from producers.testing import bridge_settings
from worker.app import create_app
from worker.enqueue import (
    CeleryEnqueuer,
    Followup,
    push_message,
    reconcile_message,
    withdraw_message,
)


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
    app = create_app(bridge_settings("sqlite://", broker_url=redis_url))
    enqueuer = CeleryEnqueuer(app)
    assert enqueuer.send([reconcile_message(40)]) == 1  # the first send declares the binding
    _events(pubsub, 1)
    client.delete("callbacks")
    pipelines, singles = _spy_on_redis(monkeypatch)

    assert enqueuer.send([reconcile_message(41, bill_no="B-41", tenant="demo")]) == 1

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
    app = create_app(bridge_settings("sqlite://", broker_url=redis_url))
    enqueuer = CeleryEnqueuer(app)

    def broken(batch: list[Followup]) -> None:
        raise redis.ConnectionError("connection reset")

    monkeypatch.setattr(enqueuer, "_send_pipelined", broken)

    assert enqueuer.send([reconcile_message(43, bill_no="B-43")]) == 1

    [message] = _queued(client, "callbacks")
    assert message["kwargs"] == {"inbox_id": 43, "bill_no": "B-43"}
    assert [e["uuid"] for e in _events(pubsub, 1)] == [message["id"]]


def test_a_batch_goes_out_in_one_pipeline_each_message_to_its_queue(
    redis_url: str, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, pubsub = broker
    app = create_app(bridge_settings("sqlite://", broker_url=redis_url))
    enqueuer = CeleryEnqueuer(app)
    warm = [push_message(1, "W-1", "demo"), reconcile_message(1)]
    assert enqueuer.send(warm) == 2  # declares the queue bindings
    _events(pubsub, 2)
    client.delete("push", "callbacks")
    pipelines, singles = _spy_on_redis(monkeypatch)

    batch = [
        push_message(51, "B-51", "demo"),
        withdraw_message(52, "B-52", "shop"),
        reconcile_message(53, bill_no="B-53"),
    ]
    assert enqueuer.send(batch) == 3

    assert (pipelines, singles) == ([["LPUSH", "PUBLISH"] * 3], [])
    monkeypatch.undo()
    pushed = _queued(client, "push")
    assert [(m["task"], m["kwargs"]) for m in pushed] == [
        ("fapiao.push", {"document_id": 51, "bill_no": "B-51", "tenant": "demo"}),
        ("fapiao.withdraw", {"document_id": 52, "bill_no": "B-52", "tenant": "shop"}),
    ]
    [reconciled] = _queued(client, "callbacks")
    assert reconciled["kwargs"] == {"inbox_id": 53, "bill_no": "B-53"}
    events = _events(pubsub, 3)
    assert [e["uuid"] for e in events] == [m["id"] for m in [*pushed, reconciled]]


def test_a_broker_that_is_down_takes_nothing_and_the_fallback_stops_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(bridge_settings("sqlite://", broker_url="redis://127.0.0.1:9/3"))
    enqueuer = CeleryEnqueuer(app)
    tries: list[str] = []
    send_one = enqueuer._send_one

    def counted(message: Followup) -> bool:
        tries.append(message.task)
        return send_one(message)

    monkeypatch.setattr(enqueuer, "_send_one", counted)

    assert enqueuer.send([push_message(n, f"D-{n}", "demo") for n in range(5)]) == 0
    assert tries == ["fapiao.push"]  # the other four are left to the sweeper

"""The real enqueue path: the worker's Celery app publishing to the test Redis (db 15)."""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import redis
from sqlalchemy.orm import Session, sessionmaker

from producers.intake import Intake
from producers.testing import API_KEY, CALLBACK_SECRET, bridge_settings, bridge_tenants, make_bill
from worker.app import create_app
from worker.enqueue import CeleryEnqueuer, reconcile_message, withdraw_message


def messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """Every message waiting in a kombu Redis list, decoded (oldest first)."""
    raw = cast(list[bytes], client.lrange(queue, 0, -1))
    decoded = []
    for item in reversed(raw):  # kombu LPUSHes: the oldest is last
        envelope = json.loads(item)
        body = json.loads(base64.b64decode(envelope["body"]))
        decoded.append({"envelope": envelope, "args": body[0], "kwargs": body[1]})
    return decoded


def test_submit_publishes_ids_and_bill_no_only(
    redis_url: str, database_url: str, session_factory: sessionmaker[Session]
) -> None:
    settings = bridge_settings(database_url, broker_url=redis_url, redis_url=redis_url)
    app = create_app(settings)
    intake = Intake(session_factory, bridge_tenants(), CeleryEnqueuer(app))
    client = redis.Redis.from_url(redis_url)
    try:
        result = intake.submit(make_bill("CEL-1"))
        enqueued = CeleryEnqueuer(app)
        assert enqueued.send([reconcile_message(41)]) == 1
        assert enqueued.send([withdraw_message(7, "CEL-7", "shop")]) == 1

        # Other suites may share Redis db 15: look only at this test's messages.
        mine = [
            m
            for m in messages(client, "push")
            if str(m["kwargs"].get("bill_no", "")).startswith("CEL-")
        ]
        push = mine[0]
        headers = push["envelope"]["headers"]
        assert headers["task"] == "fapiao.push"
        assert push["args"] == []
        assert push["kwargs"] == {
            "document_id": result.document_id,
            "bill_no": "CEL-1",
            "tenant": "demo",
        }
        assert push["envelope"]["content-type"] == "application/json"
        withdraw = mine[1]
        assert len(mine) == 2
        assert withdraw["envelope"]["headers"]["task"] == "fapiao.withdraw"
        assert withdraw["kwargs"] == {"document_id": 7, "bill_no": "CEL-7", "tenant": "shop"}
        [reconcile] = [m for m in messages(client, "callbacks") if m["kwargs"] == {"inbox_id": 41}]
        assert reconcile["envelope"]["headers"]["task"] == "fapiao.reconcile"
        assert reconcile["kwargs"] == {"inbox_id": 41}

        raw = cast(list[bytes], client.lrange("push", 0, -1) + client.lrange("callbacks", 0, -1))
        everything = b"".join(raw + [base64.b64decode(json.loads(item)["body"]) for item in raw])
        for secret in (API_KEY, CALLBACK_SECRET, "secret-demo", "buyerName", "totalAmount"):
            assert secret.encode() not in everything, secret
    finally:
        client.close()


def test_a_broker_that_cannot_be_reached_returns_false_without_raising(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    settings = bridge_settings(database_url, broker_url="redis://127.0.0.1:9/15")
    intake = Intake(session_factory, bridge_tenants(), CeleryEnqueuer(create_app(settings)))

    result = intake.submit(make_bill("CEL-2"))

    assert result.outcome.value == "created"  # durable; the sweeper sends the push later
    assert CeleryEnqueuer(create_app(settings)).send([reconcile_message(1)]) == 0

"""Publishing reuses one Redis client per broker channel (``worker.broker``), not one per call.

kombu's Redis channel builds a ``redis.Redis`` for every publish, task event and ack made
outside its consumer; the bridge's transport keeps one per connection pool.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from worker import broker, queues
from worker.app import create_app
from worker.enqueue import CeleryEnqueuer, push_message
from worker.testing import fast_settings

REPO = Path(__file__).resolve().parents[2]


def test_messages_sent_one_by_one_build_one_redis_client(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants = shutil.copy(REPO / "tenants.example.toml", tmp_path / "tenants.toml")
    settings = fast_settings(database_url="sqlite://", redis_url=redis_url, tenants_file=tenants)
    app = create_app(settings)
    enqueuer = CeleryEnqueuer(app)
    assert enqueuer.send([push_message(0, "WARM-UP", "demo")]) == 1  # pools, channel, client

    built: list[object] = []
    original = redis.Redis.__init__

    def counting(self: redis.Redis, *args: object, **kwargs: object) -> None:
        built.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.Redis, "__init__", counting)
    sent = sum(enqueuer.send([push_message(i, f"ONE-{i}", "demo")]) for i in range(1, 11))

    assert sent == 10
    assert built == []  # kombu's own channel builds one per message and task-sent event
    client = redis.Redis.from_url(redis_url)
    assert client.llen(queues.ROUTES[queues.PUSH]) == 11  # every message is in its queue
    with app.connection_for_write() as connection:
        assert isinstance(connection.default_channel, broker.Channel)

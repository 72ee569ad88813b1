"""Two real ``celery -A worker beat`` processes on one Redis: each entry fires once per interval.

No worker consumes, so every message beat sent stays in the ``maintenance`` list of the
broker. Each message expires one interval after it was sent (``expires`` header), so the
expiry times of one entry's messages are its send times shifted by a constant: a second
beat firing the same entry would leave two messages about 0 s apart. An event receiver
listens meanwhile: beat sends its messages without ``task-sent`` events.

| phase                  | expected                                                     |
|------------------------|--------------------------------------------------------------|
| both beats running     | one holds the redbeat lock and fires; the other fires nothing |
| the holder SIGKILLed   | the lock expires; the other acquires it and fires            |
| throughout             | sends of one entry at least ~one interval apart              |
| health probe           | ``python -m worker.beat`` fails before any beat, passes after |
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.events import EventReceiver

from schemas.settings import Settings
from tests.integration.test_worker_celery import start_celery, stop, worker_env
from worker import queues
from worker.app import beat_config, beat_intervals, create_app
from worker.testing import fast_settings, wait_until

pytestmark = pytest.mark.slow

SENDING = "Sending due task"


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """The beats' environment: short intervals (poll_due 1 s, sweep 4.5 s, lock 10 s)."""
    return worker_env(
        fast_settings(
            database_url=database_url, redis_url=redis_url, tenants_file=tmp_path / "none.toml"
        ),
        tmp_path / "none.toml",
    )


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What the beat processes read from ``env``."""
    for key in [k for k in os.environ if k.startswith("FAPIAO_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("FAPIAO_"):
            monkeypatch.setenv(key, value)
    return Settings.load()


def beat_messages(redis_url: str) -> list[tuple[str, datetime]]:
    """(task, expires) of every message waiting in the maintenance queue, oldest first."""
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange("maintenance", 0, -1)
    finally:
        client.close()
    found = []
    for item in reversed(raw):  # kombu LPUSHes: the list's tail is the oldest message
        headers = json.loads(item)["headers"]
        found.append((headers["task"], datetime.fromisoformat(headers["expires"])))
    return found


def sends(log: Path) -> int:
    return log.read_text(encoding="utf-8", errors="replace").count(SENDING)


class SentEvents:
    """``task-sent`` events on the broker, by task name, captured in a background thread.

    Ready once it has seen a canary message of its own (``fapiao.push`` of bill ``CANARY``,
    left in the push queue): events published before the subscription would be missed.
    """

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.names: list[str] = []
        self._connection = self.app.connection()
        self._receiver = EventReceiver(
            self._connection, handlers={"task-sent": self._on}, app=self.app
        )
        self._thread = threading.Thread(target=self._receiver.capture, daemon=True)

    def _on(self, event: dict[str, Any]) -> None:
        self.names.append(str(event.get("name")))

    def canary(self) -> None:
        """Send one message with a task-sent event and wait until it is seen."""
        seen = len(self.names)

        def arrived() -> bool:
            self.app.send_task(queues.PUSH, kwargs={"document_id": 0, "bill_no": "CANARY"})
            return _wait_briefly(lambda: len(self.names) > seen)

        wait_until(arrived, timeout=30)
        del self.names[seen:]

    def __enter__(self) -> SentEvents:
        self._thread.start()
        self.canary()
        return self

    def __exit__(self, *_: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(timeout=10)
        self._connection.release()


def _wait_briefly(predicate: Callable[[], bool]) -> bool:
    try:
        return wait_until(predicate, timeout=1, interval=0.05)
    except TimeoutError:
        return False


@pytest.fixture
def sent_events(settings: Settings) -> Iterator[SentEvents]:
    with SentEvents(settings) as events:
        yield events


def test_two_beats_fire_each_entry_once_and_the_standby_takes_over(
    settings: Settings,
    env: dict[str, str],
    redis_url: str,
    tmp_path: Path,
    sent_events: SentEvents,
) -> None:
    every = beat_intervals(settings)
    config = beat_config(settings)
    assert config["beat_scheduler"] == "worker.beat:ResilientRedBeatScheduler"
    lock_timeout = float(config["redbeat_lock_timeout"])
    interval = {queues.POLL_DUE: every.poll_due, queues.SWEEP: every.sweep}
    assert probe(env) == 1  # the health probe: no beat has fired yet
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    beats = {
        "a": start_celery(env, first_dir, "beat", "-l", "info"),
        "b": start_celery(env, second_dir, "beat", "-l", "info"),
    }
    logs = {"a": first_dir / "beat.log", "b": second_dir / "beat.log"}
    try:
        # Both running: wait for several sweeps (the longer interval) to be sent.
        wait_until(
            lambda: sum(1 for task, _ in beat_messages(redis_url) if task == queues.SWEEP) >= 3,
            timeout=60,
            interval=0.5,
        )
        for beat in beats.values():
            assert beat.poll() is None, "a beat exited; see its beat.log"
        firing = {name: sends(log) for name, log in logs.items()}
        holder = max(firing, key=lambda name: firing[name])
        standby = "b" if holder == "a" else "a"
        assert firing[holder] > 0 and firing[standby] == 0, firing
        before = len(beat_messages(redis_url))

        # The holder dies without releasing its lock: the standby waits for it to expire.
        stop(beats[holder])
        wait_until(
            lambda: sends(logs[standby]) >= 3,
            timeout=lock_timeout + every.poll_due + 30,
            interval=0.5,
        )
        assert "Acquired lock" in logs[standby].read_text(encoding="utf-8")
    finally:
        for beat in beats.values():
            stop(beat)

    messages = beat_messages(redis_url)
    assert len(messages) > before  # the standby fired after the takeover
    for task, seconds in interval.items():
        times = sorted(expires for name, expires in messages if name == task)
        assert len(times) >= 3, (task, times)
        gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
        # A double fire would leave two sends ~0 s apart; one beat keeps them ~1 interval apart.
        assert min(gaps) >= 0.5 * seconds, (task, gaps)
    # Beat's own messages carry no task-sent event (they would crowd Flower) — while a
    # message sent by any other process still does (the receiver is listening).
    assert sent_events.names == []
    sent_events.canary()
    assert probe(env) == 0  # the schedule in Redis shows recent runs


def probe(env: dict[str, str]) -> int:
    """Exit code of ``python -m worker.beat`` (the compose health check of beat)."""
    done = subprocess.run(
        [sys.executable, "-m", "worker.beat"], env=env, capture_output=True, timeout=60
    )
    return done.returncode


def test_beat_uses_redbeat_with_an_explicit_redis_and_a_per_deployment_prefix(
    settings: Settings,
) -> None:
    conf = create_app(settings).conf
    assert conf.beat_scheduler == "worker.beat:ResilientRedBeatScheduler"
    assert conf.redbeat_redis_url == settings.redis_url
    assert conf.beat_schedule.keys() == {
        "poll-due",
        "sweep",
        "refresh-tokens",
        "reconcile-daily",
    }
    other = create_app(settings.model_copy(update={"broker_url": "redis://elsewhere:6379/3"}))
    assert conf.redbeat_key_prefix != other.conf.redbeat_key_prefix
    assert "elsewhere" not in other.conf.redbeat_key_prefix
    # The standby must retry the lock more often than the lock can expire.
    assert conf.beat_max_loop_interval * 2 <= conf.redbeat_lock_timeout


def test_beats_keep_firing_once_after_redis_loses_lock_and_schedule(
    settings: Settings, env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    # A Redis restart without persistence, or a FLUSHALL, takes redbeat's lock and schedule
    # with it; plain redbeat then exits (LockNotOwnedError) and the sweeper stops exactly when
    # it must re-find the lost work. Both beats must survive, and only one may fire.
    every = beat_intervals(settings)
    dirs = [tmp_path / "a", tmp_path / "b"]
    for directory in dirs:
        directory.mkdir()
    beats = [start_celery(env, directory, "beat", "-l", "info") for directory in dirs]
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(
            lambda: sum(1 for task, _ in beat_messages(redis_url) if task == queues.SWEEP) >= 2,
            timeout=60,
            interval=0.5,
        )
        client.flushdb()  # lock, schedule and queued messages gone at once
        wait_until(
            lambda: sum(1 for task, _ in beat_messages(redis_url) if task == queues.SWEEP) >= 3,
            timeout=60,
            interval=0.5,
        )
        for beat, directory in zip(beats, dirs, strict=True):
            assert beat.poll() is None, (directory / "beat.log").read_text(encoding="utf-8")
        logs = "".join((d / "beat.log").read_text(encoding="utf-8") for d in dirs)
        assert "LockNotOwnedError" not in logs
    finally:
        for beat in beats:
            stop(beat)
        client.close()

    messages = beat_messages(redis_url)  # all sent after the flush
    for task, seconds in {queues.POLL_DUE: every.poll_due, queues.SWEEP: every.sweep}.items():
        times = sorted(expires for name, expires in messages if name == task)
        assert len(times) >= 3, (task, times)
        gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
        assert min(gaps) >= 0.5 * seconds, (task, gaps)

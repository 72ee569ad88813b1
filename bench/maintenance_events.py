"""Events of maintenance tasks reaching Flower per minute: ``python -m bench.maintenance_events``.

Starts ``celery -A worker worker`` and ``celery -A worker beat`` of a checkout (``--repo``,
default this one: point it at an export of an older commit for a before/after figure) on a
Redis database of your choosing (``--redis-url``, flushed before and after), with the
production intervals, an SQLite database in a temporary directory and the example tenants
file; an event receiver (what Flower runs) counts every event for ``--seconds``.

Output (JSON): events by type for the maintenance tasks (``fapiao.poll_due``,
``fapiao.sweep``, ``fapiao.refresh_tokens``), events of other tasks, events whose task was
never named (a ``task-started``/``succeeded`` without its ``task-sent``/``received``), the
messages beat sent (from its log) and the figures per minute and per day.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import redis
from celery import Celery
from celery.events import EventReceiver

MAINTENANCE: Final = frozenset({"fapiao.poll_due", "fapiao.sweep", "fapiao.refresh_tokens"})
REPO: Final = Path(__file__).resolve().parent.parent


def _env(repo: Path, redis_url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAPIAO_")}
    env.update(
        FAPIAO_ENVIRONMENT="development",  # the example tenants hold placeholder secrets
        FAPIAO_DATABASE_URL=f"sqlite:///{workdir / 'fapiao.db'}",
        FAPIAO_BROKER_URL=redis_url,
        FAPIAO_REDIS_URL=redis_url,
        FAPIAO_TENANTS_FILE=str(repo / "tenants.example.toml"),
        FAPIAO_LOG_FORMAT="console",
        PYTHONPATH=str(repo),
        PYTHONUNBUFFERED="1",
    )
    return env


def _start(python: str, repo: Path, env: dict[str, str], log: Path, *args: str) -> Any:
    return subprocess.Popen(
        [python, "-m", "celery", "-A", "worker", *args],
        cwd=repo, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def measure(repo: Path, redis_url: str, seconds: float, python: str) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    names: dict[str, str] = {}
    events: list[tuple[str, str]] = []
    failures: dict[str, str] = {}
    app = Celery("bench-events", broker=redis_url, set_as_current=False)

    def on_event(event: dict[str, Any]) -> None:
        if not str(event.get("type", "")).startswith("task-"):
            return
        uuid = str(event.get("uuid"))
        if event.get("name"):
            names[uuid] = str(event["name"])
        events.append((uuid, str(event["type"])))
        if event["type"] == "task-failed":
            failures.setdefault(names.get(uuid, uuid), str(event.get("exception"))[:200])

    with tempfile.TemporaryDirectory(prefix="maintenance-events-") as tmp:
        workdir = Path(tmp)
        env = _env(repo, redis_url, workdir)
        subprocess.run(
            [python, "-m", "producers.cli", "db", "upgrade"],
            cwd=repo, env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        connection = app.connection()
        receiver = EventReceiver(connection, handlers={"*": on_event}, app=app)
        listener = threading.Thread(target=receiver.capture, daemon=True)
        listener.start()
        time.sleep(1.0)  # subscribed before the first event
        worker = _start(python, repo, env, workdir / "worker.log", "worker", "-c", "1",
                        "-Q", "push,poll,callbacks,erp,maintenance", "-l", "info",
                        "--without-mingle", "--without-gossip")  # fmt: skip
        beat = _start(python, repo, env, workdir / "beat.log", "beat", "-l", "info",
                      "-s", str(workdir / "celerybeat-schedule"))  # fmt: skip
        try:
            time.sleep(seconds)
        finally:
            for process in (beat, worker):
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
            receiver.should_stop = True
            listener.join(timeout=5)
            connection.release()
            sent_by_beat = (
                (workdir / "beat.log").read_text(errors="replace").count("Sending due task")
            )
    client.flushdb()
    client.close()

    maintenance: Counter[str] = Counter()
    other: Counter[str] = Counter()
    unnamed: Counter[str] = Counter()
    for uuid, kind in events:
        name = names.get(uuid)
        if name is None:
            unnamed[kind] += 1
        elif name in MAINTENANCE:
            maintenance[kind] += 1
        else:
            other[kind] += 1
    per_minute = (sum(maintenance.values()) + sum(unnamed.values())) * 60 / seconds
    return {
        "repo": str(repo),
        "seconds": seconds,
        "beat_messages_sent": sent_by_beat,
        "maintenance_events": dict(maintenance),
        "unnamed_task_events": dict(unnamed),
        "other_task_events": dict(other),
        "failures": failures,
        "maintenance_events_per_minute": round(per_minute, 1),
        "maintenance_events_per_day": round(per_minute * 60 * 24),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--redis-url", required=True, help="a database you own (flushed)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    result = measure(args.repo.resolve(), args.redis_url, args.seconds, args.python)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

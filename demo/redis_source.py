"""Which Redis the demo uses: the configured one, a redis-server it starts, or an in-process one.

| order | source | when |
|---|---|---|
| 1 | the URL given (``--redis-url``, else ``FAPIAO_REDIS_URL``) | it answers PING |
| 2 | ``redis-server`` from PATH, on a free loopback port, no persistence | it is installed |
| 3 | ``fakeredis.TcpFakeServer`` in a thread of the demo process | always ("demo only": |
| | | in memory, ~4× slower, lives as long as the demo) |

Celery's Redis transport, the token cache and the locks all work against each of them.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import redis

from demo.processes import ProcessGroup, free_port

__all__ = ["RedisSource", "redis_answers", "redis_for_demo"]

SourceKind = Literal["configured", "redis-server", "fakeredis"]

FAKEREDIS_NOTICE = (
    "DEMO ONLY: no Redis answered and no redis-server is installed, so the demo runs an"
    " in-process Redis-protocol server (fakeredis): in memory, slower, gone when the demo"
    " ends. Use a real Redis for anything else. / 仅供演示：使用进程内fakeredis代替Redis"
)


@dataclass(frozen=True, slots=True)
class RedisSource:
    url: str
    kind: SourceKind
    notice: str | None = None


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _wait_answers(url: str, attempts: int = 100) -> None:
    import time

    for _ in range(attempts):
        if redis_answers(url, timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer PING")


@contextmanager
def redis_for_demo(
    configured: str | None,
    processes: ProcessGroup,
    workdir: Path,
    *,
    allow_server: bool = True,
) -> Iterator[RedisSource]:
    """The Redis the demo uses (table above); what it started stops when the block ends."""
    if configured and redis_answers(configured):
        yield RedisSource(configured, "configured")
        return
    note = f"{configured} does not answer; " if configured else ""
    binary = shutil.which("redis-server") if allow_server else None
    if binary is not None:
        port = free_port()
        processes.start(
            "redis-server",
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            env={"PATH": "/usr/bin:/bin"},
            log_path=workdir / "logs" / "redis.log",
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        _wait_answers(url)
        yield RedisSource(url, "redis-server", note + f"started redis-server on port {port}")
        return
    from fakeredis import TcpFakeServer

    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        _wait_answers(url)
        yield RedisSource(url, "fakeredis", note + FAKEREDIS_NOTICE)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

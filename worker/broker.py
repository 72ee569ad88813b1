"""The Redis broker transport: kombu's, with one Redis client per channel instead of per call.

kombu's Redis ``Channel.conn_or_acquire()`` builds a new ``redis.Redis`` (over the channel's
connection pool) for every publish, fanout ``PUBLISH`` (task events) and late ack outside
the consumer's own client; building one registers ~170 response callbacks, and the profile
counted 3–7 of them per document. Here a channel keeps ONE client per connection pool: the
same connections, the same commands, only the Python object is reused (a ``redis.Redis``
over a pool is thread-safe; when kombu replaces the pool after a disconnect, a new client is
built for the new pool).

``worker.app.celery_config`` selects this transport (``broker_transport``) for ``redis://``
and ``rediss://`` broker URLs; any other scheme keeps kombu's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from kombu.transport import redis as kombu_redis

__all__ = ["TRANSPORT", "Channel", "Transport"]

TRANSPORT: Final = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; ``conn_or_acquire`` reuses one client per connection pool."""

    _reused: tuple[Any, Any] | None = None  # (pool, client)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        reused = self._reused
        if reused is None or reused[0] is not pool:
            reused = (pool, self._create_client())  # type: ignore[no-untyped-call]
            self._reused = reused
        yield reused[1]


class Transport(kombu_redis.Transport):
    Channel = Channel
